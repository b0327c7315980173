/* placeholder until the module lands */
#include "batch/cli.h"

int fmb_cmd_run(int argc, char **argv)
{
    (void)argc;
    fmb_cli_error(argv[0], "not built yet");
    return FMB_EXIT_FATAL;
}

int fmb_cmd_check(int argc, char **argv)
{
    (void)argc;
    fmb_cli_error(argv[0], "not built yet");
    return FMB_EXIT_FATAL;
}

int fmb_cmd_status(int argc, char **argv)
{
    (void)argc;
    fmb_cli_error(argv[0], "not built yet");
    return FMB_EXIT_FATAL;
}

int fmb_cmd_export(int argc, char **argv)
{
    (void)argc;
    fmb_cli_error(argv[0], "not built yet");
    return FMB_EXIT_FATAL;
}

int fmb_cmd_retry(int argc, char **argv)
{
    (void)argc;
    fmb_cli_error(argv[0], "not built yet");
    return FMB_EXIT_FATAL;
}

