/* placeholder until the module lands */
#include "batch/cli.h"

int fmb_cmd_bench(int argc, char **argv)
{
    (void)argc;
    fmb_cli_error(argv[0], "not built yet");
    return FMB_EXIT_FATAL;
}

