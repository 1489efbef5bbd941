#!/bin/sh
# expect_failure.sh LIMIT_S REGEX CMD...: passes when CMD exits non-zero (but not by the outer
# timeout) within LIMIT_S seconds and its combined output matches REGEX (grep -E).
limit=$1; regex=$2; shift 2
out=$(timeout --kill-after=5 "$limit" "$@" 2>&1); rc=$?
printf '%s\n' "$out"
if [ "$rc" -eq 0 ]; then echo "expect_failure: command succeeded, expected a failure"; exit 1; fi
if [ "$rc" -eq 124 ]; then echo "expect_failure: command hung past ${limit}s"; exit 1; fi
if ! printf '%s\n' "$out" | grep -Eq "$regex"; then
  echo "expect_failure: exit $rc but output does not match /$regex/"; exit 1
fi
echo "expect_failure: exit $rc with the expected message"
