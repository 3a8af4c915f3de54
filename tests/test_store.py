"""The store on a real SQLite file and a real PostgreSQL database: migrations, arrays, locking."""

from __future__ import annotations

import sqlite3
import threading

import numpy as np
import pytest
from alembic import command
from sqlalchemy import inspect, text

from app.stepping import SessionArrays
from app.store import codec
from app.store.database import Database
from app.store.migrate import alembic_config, downgrade, upgrade
from app.store.repository import SessionRepository
from tests.support import new_record

TABLES = {"sessions", "session_arrays", "idempotency_records", "session_history"}


def table_names(database_url: str) -> set[str]:
    database = Database(database_url)
    try:
        return set(inspect(database.engine).get_table_names()) - {"alembic_version"}
    finally:
        database.dispose()


def test_migrations_upgrade_downgrade_upgrade_leave_no_pending_diff(database_url):
    upgrade(database_url)
    assert table_names(database_url) == TABLES
    command.check(alembic_config(database_url))  # raises if the models and migrations differ

    downgrade(database_url)
    assert table_names(database_url) == set()

    upgrade(database_url)
    assert table_names(database_url) == TABLES
    command.check(alembic_config(database_url))


def test_array_data_is_stored_uncompressed_out_of_line_on_postgresql(postgres_url):
    upgrade(postgres_url)
    database = Database(postgres_url)
    with database.transaction(write=False) as db:
        storage = db.execute(
            text(
                "SELECT attstorage FROM pg_attribute "
                "WHERE attrelid = 'session_arrays'::regclass AND attname = 'data'"
            )
        ).scalar_one()
    database.dispose()
    assert storage == "e"  # EXTERNAL


def test_arrays_round_trip_exactly(database):
    rng = np.random.default_rng(0)
    arrays = {
        "param/w": rng.standard_normal((2, 3)).astype(np.float32),
        "exp_avg/w": rng.standard_normal((2, 3)).astype(np.float64),
        "step/w": np.array(7, dtype=np.int64),  # the core's per-tensor step count
        "param/empty": np.zeros((0, 4), dtype=np.float32),
    }
    record = new_record()
    with database.transaction(write=True) as db:
        repository = SessionRepository(db)
        repository.add(record)
        SessionArrays(db).save(record.id, arrays)

    with database.transaction(write=False) as db:
        loaded = SessionArrays(db).load(record.id)
        writable = SessionArrays(db).load(record.id, writable=True)

    assert loaded.keys() == arrays.keys()
    for key, array in arrays.items():
        assert loaded[key].dtype == array.dtype
        assert loaded[key].shape == array.shape
        np.testing.assert_array_equal(loaded[key], array)
        assert not loaded[key].flags.writeable  # a view of the fetched bytes
        assert writable[key].flags.writeable
        np.testing.assert_array_equal(writable[key], array)


def test_save_arrays_replaces_every_array(database):
    record = new_record()
    with database.transaction(write=True) as db:
        repository = SessionRepository(db)
        repository.add(record)
        SessionArrays(db).save(record.id, {"param/a": np.ones(2), "param/b": np.ones(3)})
        SessionArrays(db).save(record.id, {"param/a": np.full(2, 5.0)})
    with database.transaction(write=False) as db:
        loaded = SessionArrays(db).load(record.id)
    assert list(loaded) == ["param/a"]
    np.testing.assert_array_equal(loaded["param/a"], [5.0, 5.0])


def test_save_arrays_drops_old_keys_whatever_their_number(database):
    """More keys than one statement may bind (PostgreSQL: 65 535 parameters; SQLite: its
    variable limit, lowered here to 999 as stock builds before 3.32 have it)."""
    many = 70_000 if database.dialect == "postgresql" else 2_500
    record = new_record()
    first = {f"param/t{i}": np.zeros(1, np.float32) for i in range(many)}
    with database.transaction(write=True) as db:
        if database.dialect == "sqlite":
            driver = db.connection().connection.driver_connection
            driver.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
        repository = SessionRepository(db)
        repository.add(record)
        SessionArrays(db).save(record.id, first)
        kept = dict(list(first.items())[1::2])
        SessionArrays(db).save(record.id, kept)
    with database.transaction(write=False) as db:
        assert SessionArrays(db).load(record.id).keys() == kept.keys()


def test_deleting_a_session_deletes_its_arrays(database):
    kept, deleted = new_record(), new_record()
    with database.transaction(write=True) as db:
        repository = SessionRepository(db)
        for record in (kept, deleted):
            repository.add(record)
            SessionArrays(db).save(record.id, {"param/w": np.zeros((2, 3), np.float32)})
    with database.transaction(write=True) as db:
        repository = SessionRepository(db)
        repository.delete(repository.get(deleted.id))
    with database.transaction(write=False) as db:
        repository = SessionRepository(db)
        assert repository.get(deleted.id) is None
        assert SessionArrays(db).load(deleted.id) == {}
        assert list(SessionArrays(db).load(kept.id)) == ["param/w"]
        count = db.execute(text("SELECT count(*) FROM session_arrays")).scalar_one()
    assert count == 1


def test_timestamps_come_back_aware_in_utc(database):
    record = new_record()
    with database.transaction(write=True) as db:
        SessionRepository(db).add(record)
    with database.transaction(write=False) as db:
        loaded = SessionRepository(db).get(record.id)
    assert loaded is not None
    assert loaded.created_at == record.created_at
    assert loaded.created_at.utcoffset().total_seconds() == 0


def test_concurrent_read_modify_write_transactions_lose_no_update(database):
    """Each writer locks, reads θ and t, adds 1, writes back; none may overwrite another."""
    record = new_record()
    with database.transaction(write=True) as db:
        repository = SessionRepository(db)
        repository.add(record)
        SessionArrays(db).save(record.id, {"param/x": np.zeros(1)})
    writers, increments = 4, 25
    errors: list[BaseException] = []

    def increment_many() -> None:
        try:
            for _ in range(increments):
                with database.transaction(write=True) as db:
                    repository = SessionRepository(db)
                    row = repository.get(record.id, for_update=True)
                    assert row is not None
                    arrays = SessionArrays(db).load(record.id, writable=True)
                    arrays["param/x"] += 1.0
                    SessionArrays(db).save(record.id, arrays)
                    row.step += 1
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=increment_many) for _ in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    with database.transaction(write=False) as db:
        repository = SessionRepository(db)
        row = repository.get(record.id)
        x = SessionArrays(db).load(record.id)["param/x"]
    assert row is not None and row.step == writers * increments
    assert x[0] == writers * increments


def test_sqlite_connections_use_wal_and_foreign_keys(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'nested' / 'db.sqlite3'}")  # parent is created
    with database.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    database.dispose()


def test_codec_writes_little_endian_bytes_in_c_order():
    array = np.arange(6, dtype=">f4").reshape(2, 3).T  # big-endian and not C-contiguous
    encoded = codec.encode(array)
    assert encoded.dtype == "float32"
    assert encoded.shape == [3, 2]
    assert encoded.data == np.ascontiguousarray(array).astype("<f4").tobytes()
    np.testing.assert_array_equal(codec.decode(encoded.dtype, encoded.shape, encoded.data), array)


def test_codec_refuses_dtypes_a_session_cannot_have():
    with pytest.raises(ValueError, match="int32"):
        codec.encode(np.arange(3, dtype=np.int32))
    with pytest.raises(ValueError, match="float16"):
        codec.decode("float16", [1], b"\0\0")
