"""Unit tests of the sample data: the synthetic feed's shape and the file formats `seed --file` reads."""

from __future__ import annotations

import gzip
import ipaddress
import json
import re
from collections import defaultdict

import pytest

from ingest import LoginvaultError
from ingest.local import sample

EVENTS = list(sample.synthetic_events(100))


def test_exactly_one_malformed_event_per_hundred():
    malformed = [e for e in EVENTS if "user_id" not in e]
    assert malformed == [sample.MALFORMED]
    assert len(EVENTS) == 100


def test_about_thirty_percent_null_locales():
    nulls = sum(1 for e in EVENTS if "user_id" in e and e["locale"] is None)
    assert 20 <= nulls <= 40


def test_both_ip_versions():
    versions = {ipaddress.ip_address(e["ip"]).version for e in EVENTS if "ip" in e}
    assert versions == {4, 6}


def test_device_ids_look_like_the_feed():
    ids = [e["device_id"] for e in EVENTS if "device_id" in e]
    assert len(ids) == 99
    assert all(re.fullmatch(r"\d{3}-\d{2}-\d{4}", d) for d in ids), ids


def test_some_ip_is_shared_by_several_users():
    users_by_ip = defaultdict(set)
    for e in EVENTS:
        if "ip" in e:
            users_by_ip[e["ip"]].add(e["user_id"])
    assert max(len(users) for users in users_by_ip.values()) >= 2


def test_same_seed_same_events_other_seed_other_events():
    assert list(sample.synthetic_events(100)) == EVENTS
    assert list(sample.synthetic_events(100, seed=7)) != EVENTS


def test_to_body_sends_strings_as_is_and_objects_as_json():
    assert sample.to_body("not json {") == "not json {"
    body = sample.to_body({"user_id": "ü", "locale": None})
    assert body == '{"user_id": "ü", "locale": null}'
    assert json.loads(body) == {"user_id": "ü", "locale": None}


ITEMS = [{"user_id": "a", "ip": "1.2.3.4"}, "not json {", '{"foo": "oops_wrong_msg_type", "bar": "123"}', [1, 2], 5]


def test_file_events_json_array(tmp_path):
    path = tmp_path / "events.json"
    path.write_text("\n  " + json.dumps(ITEMS, indent=2))
    assert list(sample.file_events(path)) == ITEMS


def test_file_events_json_lines_with_blank_lines(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(json.dumps(item) for item in ITEMS[:2]) + "\n\n" + json.dumps(ITEMS[2]) + "\n")
    assert list(sample.file_events(path)) == ITEMS[:3]


@pytest.mark.parametrize("as_array", [True, False], ids=["array", "lines"])
def test_file_events_gzipped(tmp_path, as_array):
    path = tmp_path / "events.json.gz"
    text = json.dumps(ITEMS) if as_array else "\n".join(json.dumps(item) for item in ITEMS)
    path.write_bytes(gzip.compress(text.encode()))
    assert list(sample.file_events(path)) == ITEMS


def test_file_events_bad_input_is_a_clear_error(tmp_path):
    with pytest.raises(LoginvaultError, match="no such file"):
        list(sample.file_events(tmp_path / "missing.json"))
    bad_line = tmp_path / "bad.jsonl"
    bad_line.write_text('{"ok": 1}\nnot json\n')
    with pytest.raises(LoginvaultError, match=r"bad\.jsonl:2 is not valid JSON"):
        list(sample.file_events(bad_line))
    bad_array = tmp_path / "bad.json"
    bad_array.write_text("[1, 2")
    with pytest.raises(LoginvaultError, match="not a valid JSON array"):
        list(sample.file_events(bad_array))
