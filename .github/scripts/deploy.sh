#!/usr/bin/env bash
# Blue-green deploy of one environment with the provisioner image built for this commit
# (it carries provisioner/envs/). Used by .github/workflows/deploy-env.yml.
#
#   deploy.sh                      deploy $REGISTRY/$PREFIX/gateway:$TAG
#   deploy.sh --rollback IMAGE     deploy IMAGE (the one that served before)
#
# Env: ENVIRONMENT, REGISTRY, PREFIX, TAG, AWS credentials (OIDC, from
# configure-aws-credentials), optional SMOKE_BASE_URL. Writes `previous_image` and `url`
# to $GITHUB_OUTPUT. Exit: 0 deployed; 1 rolled back by the provisioner or failed.
set -euo pipefail
: "${ENVIRONMENT:?}" "${REGISTRY:?}" "${PREFIX:?}" "${TAG:?}"
out="${GITHUB_OUTPUT:-/dev/null}"

image="$REGISTRY/$PREFIX/gateway:$TAG"
if [ "${1:-}" = "--rollback" ]; then
    image="${2:?--rollback needs the image to restore}"
fi
provisioner_image="$REGISTRY/$PREFIX/provisioner:$TAG"

prov() {
    docker run --rm \
        -e AWS_REGION -e AWS_DEFAULT_REGION \
        -e AWS_ACCESS_KEY_ID -e AWS_SECRET_ACCESS_KEY -e AWS_SESSION_TOKEN \
        "$provisioner_image" "$@"
}

status_json="$(prov status "$ENVIRONMENT" --output json)"
url="${SMOKE_BASE_URL:-$(jq -r '.urls.domain // .urls.alb // empty' <<< "$status_json")}"
echo "url=$url" >> "$out"

echo "Deploying $image to $ENVIRONMENT"
set +e
prov deploy "$ENVIRONMENT" --image "$image" --output json > deploy.json
rc=$?
set -e
cat deploy.json

previous_td="$(jq -r '.previous_task_definition // empty' deploy.json 2>/dev/null || true)"
if [ -n "$previous_td" ]; then
    previous_image="$(aws ecs describe-task-definition --task-definition "$previous_td" \
        --query "taskDefinition.containerDefinitions[?name=='gateway'].image | [0]" --output text)"
    if [ "$previous_image" != "$image" ] && [ "$previous_image" != "None" ]; then
        echo "previous_image=$previous_image" >> "$out"
    fi
fi

case "$rc" in
    0) echo "::notice::$ENVIRONMENT now runs $image" ;;
    3) echo "::error::$ENVIRONMENT rolled back automatically: $(jq -r '.reason // "unhealthy"' deploy.json)"; exit 1 ;;
    *) echo "::error::provisioner deploy failed (exit $rc)"; exit 1 ;;
esac
