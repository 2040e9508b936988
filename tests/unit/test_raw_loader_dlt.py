"""Unit: what RawLoader changes in the way dlt works for it — config lookups answered once per
loader during its runs, live schemas kept in memory; real dlt, no database."""

from __future__ import annotations

import dlt
from dlt.common.schema import Schema
from dlt.common.storages.configuration import SchemaStorageConfiguration
from dlt.common.storages.live_schema_storage import LiveSchemaStorage

from ingest.consumer import dlt_defaults
from ingest.consumer.raw_loader import _config_lookups_cached, _keep_schemas_in_memory, _SchemasInMemory


def test_a_loaders_config_lookups_are_answered_once_and_in_precedence(monkeypatch):
    dlt_defaults.use_packaged_defaults()
    monkeypatch.setenv("LOAD__RAISE_ON_MAX_RETRIES", "3")
    cache: dict = {}
    with _config_lookups_cached(cache):
        # an environment variable still beats the shipped default (1)
        assert dlt.config["load.raise_on_max_retries"] == 3
        monkeypatch.setenv("LOAD__RAISE_ON_MAX_RETRIES", "4")
        # during a loader's runs, the first answer stands
        assert dlt.config["load.raise_on_max_retries"] == 3
    assert cache
    # outside them, and for another loader, the providers answer as always
    assert dlt.config["load.raise_on_max_retries"] == 4
    with _config_lookups_cached({}):
        assert dlt.config["load.raise_on_max_retries"] == 4
    monkeypatch.delenv("LOAD__RAISE_ON_MAX_RETRIES")
    assert dlt.config["load.raise_on_max_retries"] == 1


def test_a_saved_schema_is_not_reloaded_from_its_file(tmp_path, monkeypatch):
    storage = LiveSchemaStorage(SchemaStorageConfiguration(str(tmp_path)), makedirs=True)
    storage.__class__ = _SchemasInMemory
    schema = Schema("raw")
    storage.save_schema(schema)
    assert storage.is_live_schema_committed("raw")

    def no_reload(name):
        raise AssertionError("reloaded")

    monkeypatch.setattr(storage, "load_schema", no_reload)
    assert storage["raw"] is schema
    assert storage["raw"].version_hash == schema.version_hash


def test_an_unknown_schema_still_comes_from_storage(tmp_path):
    writer = LiveSchemaStorage(SchemaStorageConfiguration(str(tmp_path)), makedirs=True)
    writer.save_schema(Schema("raw"))
    reader = LiveSchemaStorage(SchemaStorageConfiguration(str(tmp_path)))
    reader.__class__ = _SchemasInMemory
    assert reader["raw"].name == "raw"
    assert reader["raw"] is reader["raw"]


def test_the_pipelines_schema_storage_keeps_schemas_in_memory(tmp_path):
    pipeline = dlt.pipeline(pipeline_name="unit_schemas", pipelines_dir=str(tmp_path))
    _keep_schemas_in_memory(pipeline)
    assert type(pipeline._schema_storage) is _SchemasInMemory
