#!/bin/sh
# The one list of the Debian packages fmbatch needs, and the step that installs the missing
# ones (`make demo`, `make test` and .ci/run call it; nothing else repeats the list).
#
#   tools/deps.sh build|test|ci     check (dpkg-query) the packages of that stage, install the
#                                   missing ones: as root with apt-get, else through `sudo -n`
#                                   when sudo needs no password, else print the one apt-get
#                                   command to run and exit 2
#   tools/deps.sh list build|test|ci     print the stage's packages
#   tools/deps.sh python VENV       print a python that imports HF tokenizers (for
#                                   tests/sh/tokenizer_diff.sh): python3 when it has it, else
#                                   VENV's when it has it, else after `pip install --user`, else
#                                   after making VENV (python3 -m venv; Debian's pip refuses to
#                                   install outside one, PEP 668). Never fails: when all of it
#                                   fails it says why on stderr and prints python3 (the
#                                   differential test then FAILs naming the missing package)
#
# Stages add up: build = what compiles and runs fmbatch; test = + what the tests call (archive
# tools, the sqlite3 shell, Python with pip and venv); ci = + cppcheck for `make lint`, chromium for the report's browser test, clang (libFuzzer, libomp) for `make fuzz-smoke` and gcc's ThreadSanitizer runtime for `make tsan-smoke`.
# Not on Debian (no dpkg-query): says so and exits 0; a missing library then fails the build.
set -u

BUILD_PKGS="build-essential libopenblas-dev libjansson-dev libpcre2-dev libsqlite3-dev
    libarchive-dev libtomlplusplus-dev libzstd-dev zlib1g-dev"
TEST_PKGS="xz-utils zstd sqlite3 python3 python3-pip python3-venv wamerican"
CI_PKGS="cppcheck chromium fonts-dejavu-core clang libclang-rt-14-dev libomp-dev libtsan2"

say() { echo "deps: $*" >&2; }

pkgs_of() {
    case $1 in
    build) echo $BUILD_PKGS ;;
    test) echo $BUILD_PKGS $TEST_PKGS ;;
    ci) echo $BUILD_PKGS $TEST_PKGS $CI_PKGS ;;
    *) say "unknown stage '$1' (build, test or ci)"; exit 2 ;;
    esac
}

install_stage() {
    want=$(pkgs_of "$1")
    if ! command -v dpkg-query >/dev/null 2>&1; then
        say "no dpkg-query (not Debian?): make sure these or their equivalents are installed: $want"
        return 0
    fi
    missing=
    for p in $want; do
        st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)
        [ "$st" = installed ] || missing="$missing $p"
    done
    [ -z "$missing" ] && return 0
    missing=${missing# }
    if [ "$(id -u)" = 0 ]; then
        run=
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        run="sudo -n"
    else
        say "missing Debian packages: $missing"
        say "install them with this command, then run make again:"
        echo "sudo apt-get install -y $missing"
        exit 2
    fi
    say "installing missing Debian packages${run:+ (through sudo)}: $missing"
    # A fresh machine may have no package lists yet: update once when the install fails.
    if ! $run env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null; then
        $run apt-get update -qq &&
            $run env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null ||
            { say "apt-get install failed"; exit 1; }
    fi
}

has_tok() { "$1" -c "import tokenizers" 2>/dev/null; }

python_with_tokenizers() {
    venv=$1
    py=$(command -v python3 2>/dev/null) || { say "no python3"; echo python3; return 0; }
    if has_tok "$py"; then echo "$py"; return 0; fi
    if [ -x "$venv/bin/python3" ] && has_tok "$venv/bin/python3"; then
        echo "$venv/bin/python3"
        return 0
    fi
    say "python3 cannot import tokenizers: pip install --user tokenizers"
    if "$py" -m pip install -q --user tokenizers >&2 2>/dev/null && has_tok "$py"; then
        echo "$py"
        return 0
    fi
    say "pip refused or failed (PEP 668 externally-managed?): a virtual environment in $venv"
    if { [ -x "$venv/bin/python3" ] || "$py" -m venv "$venv" >&2; } &&
        "$venv/bin/python3" -m pip install -q tokenizers >&2 && has_tok "$venv/bin/python3"; then
        echo "$venv/bin/python3"
        return 0
    fi
    say "could not install tokenizers (offline? python3-venv missing?): the tokenizer's differential test will fail"
    echo "$py"
}

case ${1:-} in
build | test | ci) install_stage "$1" ;;
list) pkgs_of "${2:-ci}" ;;
python) python_with_tokenizers "${2:?usage: tools/deps.sh python VENV}" ;;
*)
    sed -n '5,17s/^# \{0,1\}//p' "$0" >&2
    exit 2
    ;;
esac
