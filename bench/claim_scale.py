"""The claim at 10,000 versus 1,000,000 pending subtasks (10,000 active users both times).

    BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/edm_bench python bench/claim_scale.py

Each measured claim (a batch of 20) runs inside a transaction that is rolled
back, so every run starts from the same queue. PostgreSQL only: the data is
generated in SQL.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from harness import percentile, setup_django, summary, time_calls

SEED_SQL = """
INSERT INTO users (id, password, is_superuser, username, first_name, last_name, email, is_staff, is_active,
                   date_joined)
SELECT gen_random_uuid(), '', false, 'u' || g, '', '', '', false, true, now() FROM generate_series(1, %(users)s) g;

INSERT INTO tasks (id, owner_id, name, subject, body_text, body_html, from_name, reply_to, priority, status,
                   created_at, updated_at)
SELECT gen_random_uuid(), id, 'bench', 'hi', 'body', '', '', '', 0, 'pending', now(), now() FROM users;

INSERT INTO subtasks (id, task_id, owner_id, recipient_email, status, priority, error_message, message_id,
                      attempts, claimed_by, next_attempt_at, created_at, updated_at)
SELECT gen_random_uuid(), t.id, t.owner_id, 'r' || g || '@example.org', 'pending', 0, '',
       '<' || gen_random_uuid() || '@bench>', 0, '', now() - interval '1 minute', now(), now()
FROM tasks t CROSS JOIN generate_series(1, %(per_user)s) g;

INSERT INTO user_queues (user_id, turn, ready_at, updated_at) SELECT id, 0, now(), now() FROM users;
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=300)
    parser.add_argument("--per-user", type=int, default=None, help="run one size only (pending per user)")
    args = parser.parse_args()
    if args.per_user is not None:
        print(json.dumps(measure(args.users, args.per_user, args.repeat)))
        return
    p50 = {}
    for per_user in (1, 100):
        out = (
            subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--users",
                    str(args.users),
                    "--repeat",
                    str(args.repeat),
                    "--per-user",
                    str(per_user),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            .stdout.strip()
            .splitlines()
        )
        figures = json.loads(out[-1])
        samples = figures["samples"]
        p50[per_user] = percentile(samples, 50)
        print(
            f"claim of 20 at {figures['pending']:>9,} pending ({figures['users']} users, seeded in "
            f"{figures['seed_seconds']:.0f} s): {summary(samples)}"
        )
    print(f"p50 ratio, 1,000,000 / 10,000 pending: {p50[100] / p50[1]:.2f}")


def measure(users: int, per_user: int, repeat: int) -> dict:
    vendor = setup_django()
    if vendor != "postgresql":
        raise SystemExit("claim_scale needs PostgreSQL (BENCH_DATABASE_URL=postgres://...)")
    from django.db import connection, transaction

    from config.services import get_config_by_category
    from queues.models import EmailService
    from queues.scheduler.claim import claim_subtasks

    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(SEED_SQL, {"users": users, "per_user": per_user})
    EmailService.objects.create(name="bench", host="h", from_email="b@x.example", sending_rate=0, daily_quota=10**9)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    seed_seconds = time.perf_counter() - started
    config = get_config_by_category("queue")

    def claim() -> None:
        with transaction.atomic():
            result = claim_subtasks(worker_id="bench", limit=20, queue_config=config)
            assert len(result.items) == 20
            transaction.set_rollback(True)

    time_calls(claim, 20)
    samples = time_calls(claim, repeat)
    return {"pending": users * per_user, "users": users, "seed_seconds": seed_seconds, "samples": samples}


if __name__ == "__main__":
    main()
