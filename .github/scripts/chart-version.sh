#!/usr/bin/env bash
# Usage: chart-version.sh TAG
#
# Validates a chart release tag and prints the chart version it names:
#   chart-v1.20.3  ->  1.20.3
# Anything else (missing parts, leading zeros, pre-release suffixes, surrounding whitespace or a
# trailing newline) is refused with a message on stderr and exit status 1.
#
# Called by .github/workflows/chart.yml; tested by .github/tests/run.sh.
set -euo pipefail

if [ "$#" -ne 1 ]; then
  echo "usage: $0 TAG   (e.g. $0 chart-v1.2.3)" >&2
  exit 1
fi

tag=$1
# bash's =~ is POSIX ERE on the whole string: '$' matches only at its very end, so a trailing
# newline or space is not accepted (unlike grep, which works line by line).
re='^chart-v(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)$'
if [[ ! $tag =~ $re ]]; then
  printf 'error: tag %q is not a chart release tag: expected chart-vX.Y.Z (X, Y, Z decimal numbers without leading zeros, no suffix), e.g. chart-v1.2.3\n' "$tag" >&2
  exit 1
fi

printf '%s\n' "${BASH_REMATCH[1]}.${BASH_REMATCH[2]}.${BASH_REMATCH[3]}"
