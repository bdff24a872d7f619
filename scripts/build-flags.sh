# Sourced before `pip install` (README, .ci/run): compiler flags for the packages built from source.
# llama.cpp is compiled for the CPU it is installed on (-march=native), AMX left out: some virtual
# machines list AMX among the CPU's features and then stop the process at its first tile
# instruction (SIGILL in ggml's AMX matrix product, seen on this project's 2-core machines on
# 2026-12-01). The flags are x86-64 options, so they are set on x86-64 only; flags already set win.
if [ "$(uname -m)" = "x86_64" ]; then
    export CFLAGS="${CFLAGS:--mno-amx-tile -mno-amx-int8 -mno-amx-bf16}"
    export CXXFLAGS="${CXXFLAGS:--mno-amx-tile -mno-amx-int8 -mno-amx-bf16}"
fi
