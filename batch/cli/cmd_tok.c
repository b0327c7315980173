/*
 * cmd_tok: `fmbatch tokenize` and `fmbatch detokenize`, thin wrappers over engine/tokenizer.
 *
 *   tokenize (--tokenizer F | --model DIR) [--no-special] [FILE]
 *       reads FILE (or stdin) as bytes and prints one JSON array of ids.
 *   detokenize (--tokenizer F | --model DIR) [--skip-special] [FILE]
 *       reads whitespace-separated ids and prints the decoded text (no newline added).
 *
 * Hidden batch modes for the differential test (tools/tok_diff.py), one item per line:
 *   tokenize --hex-lines: each line is the input bytes in hex; prints one JSON array per line.
 *   detokenize --json-lines: each line is a JSON array of ids; prints one JSON string per line.
 *
 *   tokenize --time: prints the encode call's wall time to stderr (tools/bench_tokenizer.py).
 *
 * Exit codes: 0 ok; 2 bad flag, unreadable or malformed input or tokenizer.json; 1 otherwise.
 */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch/cli/cli.h"
#include "engine/tokenizer.h"

enum {
    OPT_TOKENIZER = 256,
    OPT_MODEL,
    OPT_NO_SPECIAL,
    OPT_SKIP_SPECIAL,
    OPT_HEX,
    OPT_JSONL,
    OPT_TIME
};

typedef struct {
    const char *tokenizer, *model, *file;
    int no_special, skip_special, hex_lines, json_lines, time;
} tok_args;

static int parse_args(int argc, char **argv, tok_args *a)
{
    static const struct option longopts[] = {{"tokenizer", required_argument, 0, OPT_TOKENIZER},
                                             {"model", required_argument, 0, OPT_MODEL},
                                             {"no-special", no_argument, 0, OPT_NO_SPECIAL},
                                             {"skip-special", no_argument, 0, OPT_SKIP_SPECIAL},
                                             {"hex-lines", no_argument, 0, OPT_HEX},
                                             {"json-lines", no_argument, 0, OPT_JSONL},
                                             {"time", no_argument, 0, OPT_TIME},
                                             {"help", no_argument, 0, 'H'},
                                             {0, 0, 0, 0}};
    static const fmb_cli_opt_help own[] = {
        {"no-special", NULL, "tokenize: special tokens in the text are plain text"},
        {"skip-special", NULL, "detokenize: leave special tokens out"},
        {"hex-lines", NULL, "one input per line, hex-encoded"},
        {"json-lines", NULL, "one input per line, a JSON string"},
        {"time", NULL, "report the time taken on stderr"},
        {NULL, NULL, NULL}};
    memset(a, 0, sizeof *a);
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_TOKENIZER:
            a->tokenizer = optarg;
            break;
        case OPT_MODEL:
            a->model = optarg;
            break;
        case OPT_NO_SPECIAL:
            a->no_special = 1;
            break;
        case OPT_SKIP_SPECIAL:
            a->skip_special = 1;
            break;
        case OPT_HEX:
            a->hex_lines = 1;
            break;
        case OPT_JSONL:
            a->json_lines = 1;
            break;
        case OPT_TIME:
            a->time = 1;
            break;
        case 'H':
            fmb_cli_help(
                !strcmp(argv[0], "tokenize")
                    ? "tokenize (--tokenizer FILE | --model DIR) [options] [FILE]   bytes -> "
                      "ids (a JSON array)"
                    : "detokenize (--tokenizer FILE | --model DIR) [options] [FILE]   ids "
                      "(whitespace-separated or a JSON array) -> text",
                longopts, own);
            return 1;
        default:
            fmb_cli_error(argv[0], "unknown or incomplete option '%s'", argv[optind - 1]);
            return -1;
        }
    }
    if (!a->tokenizer == !a->model) {
        fmb_cli_error(argv[0], "give exactly one of --tokenizer FILE or --model DIR");
        return -1;
    }
    if (optind < argc - 1) {
        fmb_cli_error(argv[0], "at most one input FILE, got '%s' and more", argv[optind]);
        return -1;
    }
    a->file = optind < argc ? argv[optind] : "-";
    return 0;
}

/* Loads the tokenizer named by --tokenizer or --model (DIR/tokenizer.json). */
static int load_tok(const char *cmd, const tok_args *a, fmb_tok **tok)
{
    char path[4096];
    if (a->model)
        snprintf(path, sizeof path, "%s/tokenizer.json", a->model);
    else
        snprintf(path, sizeof path, "%s", a->tokenizer);
    fmb_err err = {{0}};
    fmb_status s = fmb_tok_load(path, tok, &err);
    if (s) {
        fmb_cli_error(cmd, "%s", err.msg);
        return fmb_cli_exit_code(s);
    }
    return 0;
}

static void print_ids(const fmb_ids *v)
{
    putchar('[');
    for (size_t i = 0; i < v->n; i++)
        printf(i ? ",%d" : "%d", v->ids[i]);
    fputs("]\n", stdout);
}

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* --hex-lines: decodes each line in place and encodes it. */
static int
tokenize_hex_lines(const char *cmd, const fmb_tok *tok, const tok_args *a, char *text, size_t len)
{
    size_t line = 0;
    char *p = text, *end = text + len;
    while (p < end) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *le = nl ? nl : end;
        line++;
        if (le > p && le[-1] == '\r')
            le--;
        size_t n = (size_t)(le - p);
        if (n % 2) {
            fmb_cli_error(cmd, "%s:%zu: odd number of hex digits", a->file, line);
            return FMB_EXIT_USAGE;
        }
        for (size_t i = 0; i < n / 2; i++) {
            int hi = hexval((unsigned char)p[2 * i]), lo = hexval((unsigned char)p[2 * i + 1]);
            if (hi < 0 || lo < 0) {
                fmb_cli_error(cmd, "%s:%zu: not hex", a->file, line);
                return FMB_EXIT_USAGE;
            }
            p[i] = (char)(hi * 16 + lo);
        }
        fmb_ids v = {0};
        fmb_err err = {{0}};
        fmb_status s = fmb_tok_encode(tok, p, n / 2, !a->no_special, &v, &err);
        if (s) {
            fmb_cli_error(cmd, "%s:%zu: %s", a->file, line, err.msg);
            fmb_ids_free(&v);
            return fmb_cli_exit_code(s);
        }
        print_ids(&v);
        fmb_ids_free(&v);
        p = nl ? nl + 1 : end;
    }
    return FMB_EXIT_OK;
}

/* parse_args for a command: 1 when it must return *rc at once (0 after --help, usage error). */
static int parse_or_exit(int argc, char **argv, tok_args *a, int *rc)
{
    int pa = parse_args(argc, argv, a);
    *rc = pa > 0 ? FMB_EXIT_OK : FMB_EXIT_USAGE;
    return pa != 0;
}

int fmb_cmd_tokenize(int argc, char **argv)
{
    const char *cmd = argv[0];
    tok_args a;
    int rc_args;
    if (parse_or_exit(argc, argv, &a, &rc_args))
        return rc_args;
    fmb_tok *tok = NULL;
    int rc = load_tok(cmd, &a, &tok);
    if (rc)
        return rc;
    char *text = NULL;
    size_t len = 0;
    fmb_err err = {{0}};
    fmb_status s = fmb_cli_read_file(a.file, &text, &len, &err);
    if (s) {
        fmb_cli_error(cmd, "%s", err.msg);
        rc = fmb_cli_exit_code(s);
        goto out;
    }
    if (a.hex_lines) {
        rc = tokenize_hex_lines(cmd, tok, &a, text, len);
        goto out;
    }
    fmb_ids v = {0};
    double t0 = fmb_now();
    s = fmb_tok_encode(tok, text, len, !a.no_special, &v, &err);
    if (a.time)
        fprintf(stderr, "encode_s=%.6f tokens=%zu bytes=%zu\n", fmb_now() - t0, v.n, len);
    if (s) {
        fmb_cli_error(cmd, "%s: %s", a.file, err.msg);
        rc = fmb_cli_exit_code(s);
    } else
        print_ids(&v);
    fmb_ids_free(&v);
out:
    free(text);
    fmb_tok_free(tok);
    if (!rc && fflush(stdout)) {
        fmb_cli_error(cmd, "cannot write the output");
        rc = FMB_EXIT_FATAL;
    }
    return rc;
}

/* Checks the ids against the vocabulary; names the file and the id. */
static int check_ids(const char *cmd,
                     const fmb_tok *tok,
                     const char *file,
                     size_t line,
                     const int32_t *ids,
                     size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= fmb_tok_vocab_size(tok) ||
            !fmb_tok_token_bytes(tok, ids[i], NULL)) {
            if (line)
                fmb_cli_error(cmd, "%s:%zu: token id %d is not in the vocabulary", file, line,
                              ids[i]);
            else
                fmb_cli_error(cmd, "%s: token id %d is not in the vocabulary (size %d)", file,
                              ids[i], fmb_tok_vocab_size(tok));
            return FMB_EXIT_USAGE;
        }
    return 0;
}

/* --json-lines: one JSON array of ids per line -> one JSON string per line. */
static int detokenize_json_lines(
    const char *cmd, const fmb_tok *tok, const tok_args *a, char *text, size_t len)
{
    size_t line = 0;
    char *p = text, *end = text + len;
    int rc = FMB_EXIT_OK;
    int32_t *ids = NULL;
    while (p < end && !rc) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *le = nl ? nl : end;
        line++;
        json_error_t je;
        json_t *arr = json_loadb(p, (size_t)(le - p), 0, &je);
        p = nl ? nl + 1 : end;
        if (!json_is_array(arr)) {
            fmb_cli_error(cmd, "%s:%zu: not a JSON array of ids", a->file, line);
            json_decref(arr);
            rc = FMB_EXIT_USAGE;
            break;
        }
        size_t n = json_array_size(arr);
        free(ids);
        ids = fmb_xmalloc((n + 1) * sizeof *ids);
        for (size_t i = 0; i < n; i++) {
            json_t *x = json_array_get(arr, i);
            ids[i] = json_is_integer(x) && json_integer_value(x) >= 0 &&
                             json_integer_value(x) <= INT32_MAX
                         ? (int32_t)json_integer_value(x)
                         : -1;
        }
        json_decref(arr);
        if ((rc = check_ids(cmd, tok, a->file, line, ids, n)))
            break;
        char *out;
        size_t olen;
        fmb_err err = {{0}};
        fmb_status s = fmb_tok_decode(tok, ids, n, a->skip_special, &out, &olen, &err);
        if (s) {
            fmb_cli_error(cmd, "%s:%zu: %s", a->file, line, err.msg);
            rc = fmb_cli_exit_code(s);
            break;
        }
        json_t *js = json_stringn(out, olen);
        char *dump = js ? json_dumps(js, JSON_ENCODE_ANY) : NULL;
        if (dump)
            printf("%s\n", dump);
        else
            rc = FMB_EXIT_FATAL;
        free(dump);
        json_decref(js);
        free(out);
    }
    free(ids);
    return rc;
}

int fmb_cmd_detokenize(int argc, char **argv)
{
    const char *cmd = argv[0];
    tok_args a;
    int rc_args;
    if (parse_or_exit(argc, argv, &a, &rc_args))
        return rc_args;
    fmb_tok *tok = NULL;
    int rc = load_tok(cmd, &a, &tok);
    if (rc)
        return rc;
    fmb_err err = {{0}};
    fmb_status s;
    if (a.json_lines) {
        char *text;
        size_t len;
        if ((s = fmb_cli_read_file(a.file, &text, &len, &err))) {
            fmb_cli_error(cmd, "%s", err.msg);
            rc = fmb_cli_exit_code(s);
        } else {
            rc = detokenize_json_lines(cmd, tok, &a, text, len);
            free(text);
        }
        goto out;
    }
    int32_t *ids = NULL;
    size_t n = 0;
    if ((s = fmb_cli_read_ids(a.file, &ids, &n, &err))) {
        fmb_cli_error(cmd, "%s", err.msg);
        rc = fmb_cli_exit_code(s);
        goto out;
    }
    if (!(rc = check_ids(cmd, tok, a.file, 0, ids, n))) {
        char *text;
        size_t len;
        if ((s = fmb_tok_decode(tok, ids, n, a.skip_special, &text, &len, &err))) {
            fmb_cli_error(cmd, "%s", err.msg);
            rc = fmb_cli_exit_code(s);
        } else {
            fwrite(text, 1, len, stdout);
            free(text);
        }
    }
    free(ids);
out:
    fmb_tok_free(tok);
    if (!rc && fflush(stdout)) {
        fmb_cli_error(cmd, "cannot write the output");
        rc = FMB_EXIT_FATAL;
    }
    return rc;
}
