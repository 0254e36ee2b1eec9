"""The applications on top of the library: the ``tvm-patterns`` command (``cli``) and its
subcommands ``demo``, ``sweep``, ``tune`` and ``build`` (``deploy``), the reference networks they
run (``models``), and result files and tables (``report``)."""
