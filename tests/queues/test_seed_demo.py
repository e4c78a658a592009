import pytest
from django.core.management import call_command

from accounts.models import User
from contacts.tag_manager import ContactTagManager
from queues.demo import DEMO_USERS
from queues.models import EmailService, SubTask, Task


def test_seed_demo_fills_an_empty_database_once(db, capsys):
    call_command("seed_demo", smtp_port=2600)

    assert EmailService.objects.count() == 3
    assert set(EmailService.objects.values_list("port", flat=True)) == {2600}
    assert Task.objects.count() == len(DEMO_USERS)
    assert SubTask.objects.count() == sum(DEMO_USERS.values())
    assert User.objects.get(username="admin").is_superuser
    alice_task = Task.objects.get(owner__username="alice")
    assert ContactTagManager().contacts_of_tag(alice_task.tag_id).count() == DEMO_USERS["alice"]
    assert "Admin login: admin / edm-demo" in capsys.readouterr().out

    call_command("seed_demo")
    assert SubTask.objects.count() == sum(DEMO_USERS.values())
    assert "demo data not added" in capsys.readouterr().out


@pytest.mark.django_db(transaction=True)
def test_the_demo_main_job_sends_everything_and_reports(monkeypatch, capsys):
    monkeypatch.setattr("queues.demo.DEMO_USERS", {"alice": 30, "bob": 5})

    call_command("demo")

    out = capsys.readouterr().out
    assert "Seeded a demo: 3 services, 2 users, 35 recipients queued." in out
    assert "Sent 35 mails at" in out
    assert "The sink received 35 messages" in out
    assert "alice" in out and "Alice's newsletter #1" in out
    assert set(SubTask.objects.values_list("status", flat=True)) == {"sent"}

    call_command("demo")  # a second run queues a new round
    out = capsys.readouterr().out
    assert "Queued a new demo round: 35 recipients." in out
    assert SubTask.objects.filter(status="sent").count() == 70
