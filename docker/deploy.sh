#!/usr/bin/env bash
# Deploy a new version of the EDM stack (docker/docker-compose.yml).
# Run with --help for what it does.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: docker/deploy.sh [--tag TAG] [--pull] [--help]

Deploys the current checkout (or an image from a registry) to the compose
stack in docker/docker-compose.yml:

  1. check the compose file and its variables (SECRET_KEY, EDM_FIELD_KEYS,
     POSTGRES_PASSWORD, GRAFANA_ADMIN_PASSWORD from the shell or docker/.env);
  2. build the image IMAGE:TAG from docker/Dockerfile (or pull it, --pull);
  3. start PostgreSQL and Redis, run the one-shot migrate service
     (migrate --noinput, then setup_periodic_tasks); the old web and
     schedulers keep running meanwhile;
  4. stop the schedulers with SIGTERM, waiting up to the grace period for the
     sends in flight to finish and be recorded;
  5. start the web, the Celery worker and beat on the new image, and check
     the web's health endpoint until it answers (200: healthy or degraded);
  6. start the schedulers on the new image and wait for them to be healthy;
  7. keep the images: IMAGE:current is what runs, IMAGE:previous the one
     before it, IMAGE:<git sha> each build.

If step 5 or 6 fails, the stack is rolled back to the image that ran before
(IMAGE:previous) and the script exits non-zero. Migrations are forward-only:
a rollback does not revert them, the previous image runs on the new schema.

Running it again with nothing changed rebuilds nothing new, migrates nothing,
restarts the schedulers gracefully and succeeds.

Options:
  --tag TAG   image tag to deploy (default: the git commit, short sha,
              with -dirty when tracked files have uncommitted changes)
  --pull      pull IMAGE:TAG from the registry instead of building it
  -h, --help  show this help

Environment:
  EDM_IMAGE            image name (default edm; e.g. registry.example.com/edm)
  EDM_COMPOSE_FILE     compose file (default docker/docker-compose.yml)
  EDM_STOP_GRACE       seconds the schedulers get to finish their sends
                       (default 120, the compose file's stop_grace_period)
  EDM_HEALTH_URL       web health endpoint (default
                       http://127.0.0.1:${WEB_PORT:-8000}/api/monitoring/system-health)
  EDM_HEALTH_RETRIES   attempts before the deploy counts as failed (default 30)
  EDM_HEALTH_INTERVAL  seconds between attempts (default 2)
EOF
}

ROOT=$(cd "$(dirname "$0")/.." && pwd)
COMPOSE_FILE=${EDM_COMPOSE_FILE:-$ROOT/docker/docker-compose.yml}
IMAGE=${EDM_IMAGE:-edm}
GRACE=${EDM_STOP_GRACE:-120}
HEALTH_URL=${EDM_HEALTH_URL:-http://127.0.0.1:${WEB_PORT:-8000}/api/monitoring/system-health}
HEALTH_RETRIES=${EDM_HEALTH_RETRIES:-30}
HEALTH_INTERVAL=${EDM_HEALTH_INTERVAL:-2}
TAG=""
PULL=0
APP_SERVICES="web celery-worker celery-beat"

while [ $# -gt 0 ]; do
    case "$1" in
        --tag)
            [ $# -ge 2 ] || { echo "deploy: --tag needs a value" >&2; exit 2; }
            TAG=$2
            shift 2
            ;;
        --pull) PULL=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "deploy: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done

step() { printf '\n==> %s\n' "$*"; }
info() { printf '    %s\n' "$*"; }
fail() {
    printf '\ndeploy FAILED: %s\n' "$*" >&2
    exit 1
}

# docker compose with the image tag the services should run.
compose() {
    EDM_IMAGE=$IMAGE EDM_TAG=current docker compose -f "$COMPOSE_FILE" "$@"
}

image_id() {
    docker image inspect --format '{{.Id}}' "$1" 2>/dev/null || true
}

web_is_healthy() {
    if command -v curl >/dev/null 2>&1; then
        curl -fsS -o /dev/null --max-time 5 "$HEALTH_URL"
    else
        python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)' "$HEALTH_URL"
    fi
}

wait_for_web() {
    attempt=1
    while [ "$attempt" -le "$HEALTH_RETRIES" ]; do
        if web_is_healthy 2>/dev/null; then
            info "healthy: $HEALTH_URL (attempt $attempt)"
            return 0
        fi
        info "not healthy yet: $HEALTH_URL (attempt $attempt of $HEALTH_RETRIES)"
        attempt=$((attempt + 1))
        sleep "$HEALTH_INTERVAL"
    done
    return 1
}

rollback() {
    reason=$1
    printf '\n!!! %s\n' "$reason" >&2
    if [ -z "$OLD_ID" ] || [ "$OLD_ID" = "$NEW_ID" ]; then
        fail "$reason; there is no earlier image to roll back to, the stack is left as it is (see: docker compose -f $COMPOSE_FILE logs web scheduler)"
    fi
    step "Rolling back to $IMAGE:previous ($OLD_ID)"
    info "Migrations are forward-only: the rollback does not revert them. The database keeps the"
    info "new schema and the previous image runs on it. To undo a migration, run"
    info "'manage.py migrate <app> <migration>' from the new image before rolling back."
    docker tag "$IMAGE:previous" "$IMAGE:current"
    compose stop -t "$GRACE" scheduler
    # shellcheck disable=SC2086 # the service list is split on purpose
    compose up -d --no-build --no-deps --force-recreate $APP_SERVICES scheduler
    if wait_for_web; then
        fail "$reason; rolled back to $IMAGE:previous, which is healthy. $IMAGE:$TAG is not deployed."
    fi
    fail "$reason; rolled back to $IMAGE:previous, but the web is still not healthy: check the database and the logs"
}

command -v docker >/dev/null 2>&1 || fail "docker is not installed or not on PATH"

if [ -z "$TAG" ]; then
    TAG=$(git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null) || fail "not a git checkout: give the image tag with --tag"
    if ! git -C "$ROOT" diff --quiet HEAD -- 2>/dev/null; then
        TAG="$TAG-dirty"
    fi
fi

step "Checking $COMPOSE_FILE and its variables"
compose config --quiet || fail "the compose file or its variables are wrong (are SECRET_KEY, EDM_FIELD_KEYS, POSTGRES_PASSWORD and GRAFANA_ADMIN_PASSWORD set in the shell or docker/.env?); nothing was changed"

if [ "$PULL" = 1 ]; then
    step "Pulling $IMAGE:$TAG"
    docker pull "$IMAGE:$TAG" || fail "could not pull $IMAGE:$TAG; nothing was changed"
else
    step "Building $IMAGE:$TAG from docker/Dockerfile"
    docker build -f "$ROOT/docker/Dockerfile" -t "$IMAGE:$TAG" \
        --label "org.opencontainers.image.revision=$TAG" "$ROOT" || fail "the image did not build; nothing was changed"
fi

OLD_ID=$(image_id "$IMAGE:current")
NEW_ID=$(image_id "$IMAGE:$TAG")
[ -n "$NEW_ID" ] || fail "$IMAGE:$TAG is not there after the build or pull"
RECREATE=""
if [ -z "$OLD_ID" ]; then
    info "first deploy: no $IMAGE:current yet, so a failure cannot be rolled back"
elif [ "$OLD_ID" = "$NEW_ID" ]; then
    info "$IMAGE:current is already this image: the services keep their containers"
else
    info "running now: $IMAGE:current ($OLD_ID); kept as $IMAGE:previous"
    RECREATE="--force-recreate"
fi

step "Starting PostgreSQL and Redis"
compose up -d --wait postgres redis || fail "PostgreSQL or Redis did not become healthy; nothing was changed"

step "Migrating the database with $IMAGE:$TAG (forward-only; the running services stay up)"
# The migrate service runs $IMAGE:$TAG before anything switches to it.
EDM_IMAGE=$IMAGE EDM_TAG=$TAG docker compose -f "$COMPOSE_FILE" run --rm --no-deps migrate \
    || fail "migrations failed; the web and schedulers still run the previous image (a migration that stopped half-way is rolled back by its transaction, except CONCURRENTLY index builds, which are re-run next time)"

if [ "$OLD_ID" != "$NEW_ID" ]; then
    if [ -n "$OLD_ID" ]; then
        docker tag "$IMAGE:current" "$IMAGE:previous"
    fi
    docker tag "$IMAGE:$TAG" "$IMAGE:current"
fi

step "Stopping the schedulers: SIGTERM, up to $GRACE s for the sends in flight"
compose stop -t "$GRACE" scheduler || fail "could not stop the schedulers; the web still runs the previous image"

step "Starting the web, Celery worker and beat on $IMAGE:$TAG"
# shellcheck disable=SC2086 # the service and flag lists are split on purpose
compose up -d --no-build --no-deps $RECREATE $APP_SERVICES || rollback "the new web, worker or beat did not start"

step "Checking the web's health"
wait_for_web || rollback "the web did not answer healthy at $HEALTH_URL after $HEALTH_RETRIES attempts"

step "Starting the schedulers on $IMAGE:$TAG"
# shellcheck disable=SC2086
compose up -d --no-build --no-deps --wait $RECREATE scheduler || rollback "the new schedulers did not become healthy"

step "Starting Prometheus and Grafana"
compose up -d --no-deps prometheus grafana || info "warning: Prometheus or Grafana did not start; the application is deployed"

step "Deployed $IMAGE:$TAG"
info "$IMAGE:current = $IMAGE:$TAG; roll back by hand with: docker tag $IMAGE:previous $IMAGE:current && docker compose -f $COMPOSE_FILE up -d --no-deps web celery-worker celery-beat scheduler"
