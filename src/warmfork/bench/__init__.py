"""Fork-latency benchmarks for warmfork: ``python -m warmfork bench``.

Layout (one job per module):

- ``methods``  -- parse method specs (``forkserver[numpy]``), build contexts;
- ``payloads`` -- module-level functions that children run;
- ``cases``    -- one timed sample of each figure, per method;
- ``worker``   -- the measuring subprocess: grows its memory, interleaves
  methods round by round, prints JSON;
- ``script``   -- the "realistic script" whose ``__main__`` imports numpy;
- ``plan``     -- which worker runs measure what (default and ``--quick``);
- ``runner``   -- runs the workers and draws the progress line;
- ``stats``, ``goals``, ``report``, ``plot`` -- summaries, targets, output;
- ``cli``      -- the command line.
"""
