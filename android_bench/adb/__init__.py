"""Device access over adb, one room per job; :mod:`android_bench.device` is the public facade.

- :mod:`.errors`: the ``DeviceError`` family and its hints;
- :mod:`.commands`: ``ShellResult``, quoting, shell v2 and legacy exit-status parsing;
- :mod:`.base`: the ``Device`` interface and ``DeviceBase`` (push with sha256 check, pull, props);
- :mod:`.shell_transport`: ``AdbShellDevice``, adb-shell over TCP or USB;
- :mod:`.server_client`: ``AdbServerClient`` / ``AdbServerDevice``, through a running adb server;
- :mod:`.elf`: the ABI a runner binary is built for;
- :mod:`.retry`: bounded exponential backoff.

The sync and shell-v2 framings are shared with the virtual device: :mod:`android_bench.sync_framing`,
:mod:`android_bench.shell_v2`.
"""
