/*
 * toml shim: toml++ -> the plain C tree of batch/toml.h. The only C++ in fmbatch.
 *
 * toml++ does the parsing (TOML 1.0, tested upstream against toml-test); this file only copies
 * its nodes, with their source positions, into malloc'd C structs. Every entry point catches all
 * exceptions (parse errors, bad_alloc) and turns them into an fmb_status.
 */
#include "batch/toml.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <string_view>

// toml++ 3.3.0 guards internal invariants with assert(), and fuzzing (tests/fuzz/fuzz_job.c)
// found inputs that reach one (parse_key on a malformed table header): an abort on a bad job
// file. Turn its checks into an exception that the entry point reports as a parse error. Never
// build this file with NDEBUG: toml++ then turns the checks into optimiser assumptions.
#ifdef NDEBUG
#error "batch/toml.cc must keep toml++'s internal checks (see above)"
#endif
[[noreturn]] static void fmb_toml_check_failed(const char *what)
{
    throw std::runtime_error(std::string("malformed TOML (toml++ internal check: ") + what + ")");
}
// Checks inside toml++'s noexcept functions still end the process (std::terminate), as the
// assert did; fuzzing has reached only the throwing kind so far.
#define TOML_ASSERT(expr) ((expr) ? static_cast<void>(0) : fmb_toml_check_failed(#expr))
#define TOML_HEADER_ONLY  1
#include <toml++/toml.h>

namespace
{

constexpr int kMaxDepth = 64; // job files are shallow; bounds recursion on hostile input

char *dup_bytes(const char *s, size_t n)
{
    char *p = static_cast<char *>(std::malloc(n + 1));
    if (!p)
        throw std::bad_alloc();
    if (n)
        std::memcpy(p, s, n);
    p[n] = 0;
    return p;
}

void free_kids(fmb_toml_value *v)
{
    for (size_t i = 0; i < v->n; i++)
        free_kids(&v->kids[i]);
    std::free(v->kids);
    std::free(v->key);
    std::free(v->str);
    v->kids = nullptr;
    v->key = nullptr;
    v->str = nullptr;
    v->n = 0;
}

void copy_node(const toml::node &node, fmb_toml_value *out, int depth)
{
    if (depth > kMaxDepth)
        throw std::runtime_error("nesting too deep");
    out->line = static_cast<int>(node.source().begin.line);
    out->col = static_cast<int>(node.source().begin.column);
    if (const toml::table *t = node.as_table()) {
        out->type = FMB_TOML_TABLE;
        size_t n = t->size();
        out->kids = static_cast<fmb_toml_value *>(std::calloc(n ? n : 1, sizeof(fmb_toml_value)));
        if (!out->kids)
            throw std::bad_alloc();
        for (auto &&[k, v] : *t) {
            fmb_toml_value *kid = &out->kids[out->n++];
            kid->key = dup_bytes(k.str().data(), k.str().size());
            kid->key_line = static_cast<int>(k.source().begin.line);
            kid->key_col = static_cast<int>(k.source().begin.column);
            copy_node(v, kid, depth + 1);
        }
        // Source order reads better in messages and keeps iteration deterministic.
        std::stable_sort(out->kids, out->kids + out->n,
                         [](const fmb_toml_value &a, const fmb_toml_value &b) {
                             if (a.key_line != b.key_line)
                                 return a.key_line < b.key_line;
                             return a.key_col < b.key_col;
                         });
    } else if (const toml::array *a = node.as_array()) {
        out->type = FMB_TOML_ARRAY;
        size_t n = a->size();
        out->kids = static_cast<fmb_toml_value *>(std::calloc(n ? n : 1, sizeof(fmb_toml_value)));
        if (!out->kids)
            throw std::bad_alloc();
        for (const toml::node &v : *a)
            copy_node(v, &out->kids[out->n++], depth + 1);
    } else if (const auto *s = node.as_string()) {
        out->type = FMB_TOML_STRING;
        const std::string &str = s->get();
        out->str = dup_bytes(str.data(), str.size());
        out->str_len = str.size();
    } else if (const auto *i = node.as_integer()) {
        out->type = FMB_TOML_INT;
        out->i = i->get();
        out->f = static_cast<double>(out->i);
    } else if (const auto *f = node.as_floating_point()) {
        out->type = FMB_TOML_FLOAT;
        out->f = f->get();
    } else if (const auto *b = node.as_boolean()) {
        out->type = FMB_TOML_BOOL;
        out->b = b->get() ? 1 : 0;
    } else {
        out->type = FMB_TOML_DATETIME;
        std::string text;
        if (const auto *d = node.as_date()) {
            char buf[64];
            std::snprintf(buf, sizeof buf, "%04d-%02d-%02d", d->get().year, d->get().month,
                          d->get().day);
            text = buf;
        } else {
            text = "date-time"; // only named in messages: no job key takes a date-time
        }
        out->str = dup_bytes(text.data(), text.size());
        out->str_len = text.size();
    }
}

} // namespace

extern "C" fmb_status
fmb_toml_parse(const char *text, size_t len, const char *path, fmb_toml_value **root, fmb_err *err)
{
    *root = nullptr;
    fmb_toml_value *r = static_cast<fmb_toml_value *>(std::calloc(1, sizeof *r));
    if (!r)
        return fmb_fail(err, FMB_ENOMEM, "%s: out of memory", path);
    try {
        toml::table tbl = toml::parse(std::string_view(text, len), std::string_view(path));
        copy_node(tbl, r, 0);
        r->line = r->col = 1;
    } catch (const toml::parse_error &e) {
        free_kids(r);
        std::free(r);
        const auto &b = e.source().begin;
        return fmb_fail(err, FMB_EINVAL, "%s:%u:%u: %.*s", path, static_cast<unsigned>(b.line),
                        static_cast<unsigned>(b.column), static_cast<int>(e.description().size()),
                        e.description().data());
    } catch (const std::bad_alloc &) {
        free_kids(r);
        std::free(r);
        return fmb_fail(err, FMB_ENOMEM, "%s: out of memory", path);
    } catch (const std::exception &e) {
        free_kids(r);
        std::free(r);
        return fmb_fail(err, FMB_EINVAL, "%s: %s", path, e.what());
    }
    *root = r;
    return FMB_OK;
}

extern "C" void fmb_toml_free(fmb_toml_value *root)
{
    if (!root)
        return;
    free_kids(root);
    std::free(root);
}

extern "C" const fmb_toml_value *fmb_toml_get(const fmb_toml_value *table, const char *key)
{
    if (!table || table->type != FMB_TOML_TABLE)
        return nullptr;
    for (size_t i = 0; i < table->n; i++)
        if (!std::strcmp(table->kids[i].key, key))
            return &table->kids[i];
    return nullptr;
}

extern "C" const char *fmb_toml_type_name(fmb_toml_type t)
{
    switch (t) {
    case FMB_TOML_TABLE:
        return "table";
    case FMB_TOML_ARRAY:
        return "array";
    case FMB_TOML_STRING:
        return "string";
    case FMB_TOML_INT:
        return "integer";
    case FMB_TOML_FLOAT:
        return "float";
    case FMB_TOML_BOOL:
        return "boolean";
    case FMB_TOML_DATETIME:
        return "date-time";
    }
    return "?";
}
