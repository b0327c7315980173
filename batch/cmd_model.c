/* placeholder until the module lands */
#include "batch/cli.h"

int fmb_cmd_score(int argc, char **argv)
{
    (void)argc;
    fmb_cli_error(argv[0], "not built yet");
    return FMB_EXIT_FATAL;
}

int fmb_cmd_generate(int argc, char **argv)
{
    (void)argc;
    fmb_cli_error(argv[0], "not built yet");
    return FMB_EXIT_FATAL;
}

int fmb_cmd_inspect(int argc, char **argv)
{
    (void)argc;
    fmb_cli_error(argv[0], "not built yet");
    return FMB_EXIT_FATAL;
}

int fmb_cmd_synth(int argc, char **argv)
{
    (void)argc;
    fmb_cli_error(argv[0], "not built yet");
    return FMB_EXIT_FATAL;
}

