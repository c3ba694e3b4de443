#!/bin/sh
# Runs the agent write-path benchmark against a real disk directory and
# against tmpfs (where only CPU counts). See README.md.
set -eu
cd "$(dirname "$0")/../.."
go test -run '^$' -bench . -benchtime 3x ./bench/agent/
BENCH_DIR=/dev/shm go test -run '^$' -bench . -benchtime 3x ./bench/agent/
