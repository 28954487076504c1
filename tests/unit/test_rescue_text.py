"""What the operator is told about a rescue snapshot: changes only when the backup found some."""

from datetime import datetime, timezone

from hub_client.rescue import changed_text, holds_changes
from hub_client.store import Rescue


def rescue(**summary) -> Rescue:
    return Rescue("m", "p", "host-a", "abcdef0123456789", datetime.now(timezone.utc), **summary)


def test_a_rescue_with_new_files_says_what_it_added():
    found = rescue(files_new=2, files_changed=1, bytes_added=300, files_processed=10)
    assert holds_changes(found)
    assert changed_text(found) == "2 new and 1 changed files, 300 bytes added"


def test_a_new_snapshot_without_changes_does_not_claim_newer_data():
    found = rescue(files_processed=10, bytes_processed=4096)
    assert not holds_changes(found)
    assert changed_text(found) == "no new or changed file against its parent snapshot"


def test_an_earlier_backup_recorded_as_the_rescue_is_named_so():
    found = rescue()
    assert not holds_changes(found)
    assert changed_text(found) == "an earlier backup of the copy, not the moved snapshot"
