#!/usr/bin/env bash
# expect_job_failure.sh LIMIT PATTERN COMMAND...
# Passes when COMMAND (an mpirun job) ends with a non-zero status within LIMIT seconds and its
# output matches the extended regular expression PATTERN; a job still running at LIMIT is
# killed and fails the test (it would have hung).
set -u
limit=$1 pattern=$2
shift 2
output=$(timeout -s KILL "$limit" "$@" 2>&1)
status=$?
printf '%s\n' "$output"
if [ "$status" -eq 137 ]; then
  echo "FAIL: the job was still running after $limit s"
  exit 1
fi
if [ "$status" -eq 0 ]; then
  echo "FAIL: the job succeeded; expected it to fail"
  exit 1
fi
if ! grep -Eq "$pattern" <<<"$output"; then
  echo "FAIL: no line matches: $pattern"
  exit 1
fi
echo "PASS: the job failed (status $status) within $limit s as expected"
