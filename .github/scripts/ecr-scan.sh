#!/usr/bin/env bash
# Waits for ECR's scan of REPOSITORY:TAG and fails when it found vulnerabilities of the
# severities in $SCAN_FAIL_ON (default: CRITICAL HIGH).
#   ecr-scan.sh REPOSITORY TAG
set -euo pipefail
repo="${1:?repository}"
tag="${2:?tag}"
fail_on="${SCAN_FAIL_ON:-CRITICAL HIGH}"

# Scan on push is set on the repository; start one in case it was not (an error here
# means a scan already ran or is running).
aws ecr start-image-scan --repository-name "$repo" --image-id imageTag="$tag" >/dev/null 2>&1 || true
aws ecr wait image-scan-complete --repository-name "$repo" --image-id imageTag="$tag"
counts="$(aws ecr describe-image-scan-findings --repository-name "$repo" --image-id imageTag="$tag" \
    --query 'imageScanFindings.findingSeverityCounts' --output json)"
echo "$repo:$tag findings by severity: $counts"
bad=0
for sev in $fail_on; do
    n="$(jq -r --arg s "$sev" '(. // {})[$s] // 0' <<< "$counts")"
    if [ "$n" -gt 0 ]; then
        echo "::error::$repo:$tag has $n $sev vulnerabilities"
        bad=1
    fi
done
exit "$bad"
