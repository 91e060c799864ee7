"""Build the C core with cffi; all metadata lives in pyproject.toml."""
import os

from setuptools import setup
from setuptools.command.build_py import build_py


class build_py_with_pth(build_py):
    """Also install warmfork.pth at the top of site-packages.

    It registers the start method in interpreters that never import
    warmfork themselves (see src/_warmfork_autoregister.py).
    """

    def run(self):
        super().run()
        self.copy_file(os.path.join("src", "warmfork.pth"),
                       os.path.join(self.build_lib, "warmfork.pth"),
                       preserve_mode=0)


setup(cffi_modules=["csrc/build_core.py:ffibuilder"],
      cmdclass={"build_py": build_py_with_pth})
