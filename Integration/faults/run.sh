#!/usr/bin/env bash
# Runs the fault and bad-input suite (the Swift tests in Integration/faults/Tests) against real servers
# started on loopback, one test at a time. Each test prints its figures as a FAULT-FIGURE line;
# RELIABILITY.md holds the table. Add `thread` or `address` to run it under a sanitizer too.
exec "$(dirname "${BASH_SOURCE[0]}")/../test.sh" faults "$@"
