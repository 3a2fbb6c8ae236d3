#!/bin/sh
# Run each unit test binary and summarise; exit non-zero when any fails.
build=$1; shift
failed=0
for t in "$@"; do
	if ! "$build/tests/test_$t"; then
		echo "unit test $t FAILED" >&2
		failed=$((failed + 1))
	fi
done
[ "$failed" -eq 0 ] || { echo "$failed unit test program(s) failed" >&2; exit 1; }
