#!/bin/sh
# Installs the llama.cpp interoperability harness into tests/interop/node_modules: the npm
# package node-llama-cpp (version pinned in package.json, integrity in package-lock.json) with its
# prebuilt CPU binary. Nothing is compiled: install scripts are not run and
# NODE_LLAMA_CPP_SKIP_DOWNLOAD stops node-llama-cpp from ever fetching llama.cpp's sources.
# Nothing is downloaded at test time.
#
# Always exits 0: when node/npm are missing, the registry is unreachable or the prebuilt binary
# does not load on this machine, it prints a notice and the interop bats tests skip.
#
# Only this platform's binary package is installed (about 85 MB on linux-x64, instead of about
# 725 MB with the CUDA and Vulkan variants that a plain `npm install` adds). `npm ci` is not used:
# the registry lacks the 3.22.1 builds of some platform packages (mac, win, riscv64), so the lock
# file cannot list them and `npm ci` refuses it; `npm install --no-save` honours the lock file
# without rewriting it.

cd "$(dirname "$0")" || exit 0

notice() {
    echo "interop: $*; the llama.cpp interoperability tests will be skipped" >&2
    exit 0
}

command -v node >/dev/null 2>&1 || notice "node not found"
command -v npm >/dev/null 2>&1 || notice "npm not found"

NODE_LLAMA_CPP_SKIP_DOWNLOAD=true
export NODE_LLAMA_CPP_SKIP_DOWNLOAD

version=$(node -p 'require("./package.json").dependencies["node-llama-cpp"]') ||
    notice "cannot read package.json"
case $(node -p 'process.platform + "-" + process.arch') in
    linux-x64) plat=linux-x64 ;;
    linux-arm64) plat=linux-arm64 ;;
    linux-arm) plat=linux-armv7l ;;
    darwin-arm64) plat=mac-arm64-metal ;;
    darwin-x64) plat=mac-x64 ;;
    *) plat= ;;
esac

# Already installed (the pinned version, and its binary loads): nothing to do, no network.
if info=$(node load.mjs --version 2>/dev/null) &&
    case $info in *"\"node_llama_cpp\":\"$version\""*) true ;; *) false ;; esac; then
    echo "interop: harness already installed: $info"
    exit 0
fi

set -- --no-save --ignore-scripts --no-audit --no-fund --prefer-offline --loglevel=error \
    --fetch-retries=1 --fetch-retry-mintimeout=1000 --fetch-retry-maxtimeout=5000 \
    --fetch-timeout=60000
if [ -n "$plat" ] &&
    npm install "$@" --omit=optional "@node-llama-cpp/$plat@$version"; then
    :
elif npm install "$@"; then
    :
else
    rm -rf node_modules
    notice "npm install failed (registry unreachable?)"
fi

if ! info=$(node load.mjs --version); then
    rm -rf node_modules
    notice "the prebuilt llama.cpp binary does not load on this machine"
fi
echo "interop: harness installed: $info"
exit 0
