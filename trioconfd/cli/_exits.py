"""The ``trioconfd`` command's exit codes."""

#: Exit codes: the answer was OK; the daemon answered with an error; the
#: command line or its files were wrong; no quorum replied in time.
EXIT_OK = 0
EXIT_ERROR_REPLY = 1
EXIT_USAGE = 2
EXIT_TIMEOUT = 3
#: Standard output was closed before the command wrote to it (``| head``):
#: the status of a process that SIGPIPE ends, as other command-line tools.
EXIT_CLOSED_OUTPUT = 141
#: The exit status after Ctrl-C, as a shell reports a SIGINT death.
EXIT_INTERRUPTED = 130
#: Standard output could not be written (a full disk, an I/O error), or was
#: closed when the command started: BSD's EX_IOERR.
EXIT_OUTPUT_ERROR = 74
