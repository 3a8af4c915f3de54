"""The store on a real SQLite file and a real PostgreSQL database: migrations, arrays, locking."""

from __future__ import annotations

import sqlite3
import threading

import numpy as np
import pytest
from alembic import command
from sqlalchemy import delete, inspect, select, text
from sqlalchemy.orm.exc import StaleDataError

from app.config import Settings
from app.stepping import SessionArrays
from app.store import codec
from app.store.arrays import CHUNK_BYTES, CorruptChunksError
from app.store.database import SQLITE_PAGE_SIZE, SQLITE_WAL_CHECKPOINT_BYTES, Database
from app.store.held import send
from app.store.migrate import alembic_config, downgrade, upgrade
from app.store.models import SessionArray
from app.store.repository import SessionRepository
from app.store.steplog import LoggedStep
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


RELOPTIONS = text(
    "SELECT c.reloptions, t.reloptions FROM pg_class c JOIN pg_class t ON t.oid = c.reltoastrelid "
    "WHERE c.oid = 'session_arrays'::regclass"
)


def test_autovacuum_of_array_rows_is_unthrottled_on_postgresql(postgres_url):
    """Migration 0007: the arrays' dead TOAST chunks are vacuumed without the cost-based delay,
    from 10 000 dead chunks on; downgrading restores the server's defaults."""
    upgrade(postgres_url)
    database = Database(postgres_url)
    try:
        with database.transaction(write=False) as db:
            table, toast = db.execute(RELOPTIONS).one()
        assert "autovacuum_vacuum_cost_delay=0" in table
        assert set(toast) == {
            "autovacuum_vacuum_cost_delay=0",
            "autovacuum_vacuum_scale_factor=0",
            "autovacuum_vacuum_threshold=10000",
        }
        downgrade(postgres_url, "0006")
        with database.transaction(write=False) as db:
            assert db.execute(RELOPTIONS).one() == (None, None)
    finally:
        database.dispose()


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


@pytest.mark.slow  # seventy thousand rows on PostgreSQL
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


def test_a_new_sqlite_file_has_large_pages_and_a_wal_checkpoint_by_bytes(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    with database.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA page_size").scalar() == SQLITE_PAGE_SIZE
        autocheckpoint = connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()
        assert autocheckpoint * SQLITE_PAGE_SIZE == SQLITE_WAL_CHECKPOINT_BYTES
        limit = connection.exec_driver_sql("PRAGMA journal_size_limit").scalar()
        assert limit == SQLITE_WAL_CHECKPOINT_BYTES
    database.dispose()
    upgrade(f"sqlite:///{tmp_path / 'db.sqlite3'}")  # the migrations' connections keep it
    with sqlite3.connect(tmp_path / "db.sqlite3") as connection:
        assert connection.execute("PRAGMA page_size").fetchone() == (SQLITE_PAGE_SIZE,)


def test_an_existing_sqlite_file_keeps_its_page_size(tmp_path):
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as connection:  # made by SQLite's defaults: 4 KiB pages
        connection.execute("PRAGMA page_size=4096")
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("CREATE TABLE t (x)")
    database = Database(f"sqlite:///{path}")
    with database.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA page_size").scalar() == 4096
        autocheckpoint = connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()
        assert autocheckpoint * 4096 == SQLITE_WAL_CHECKPOINT_BYTES
    database.dispose()


def test_the_memory_store_keeps_sqlites_own_page_size():
    database = Database("memory://")
    with database.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA page_size").scalar() < SQLITE_PAGE_SIZE
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


def test_the_step_paths_row_advances_by_one_version_and_refuses_a_stale_one(database):
    """`SessionRepository.row` / `advance`: the step path's Core statements bump the version as
    the mapper does on an ORM update, and find the row only at the version they read."""
    record = new_record()
    with database.transaction(write=True) as db:
        SessionRepository(db).add(record)
    with database.transaction(write=True) as db:
        repository = SessionRepository(db)
        row = repository.row(record.id, for_update=True)
        assert row is not None and row.version == 1
        repository.advance(row, step=1, schedule_state={}, last_loss=0.5)
        assert (row.step, row.version) == (1, 2)
    with database.transaction(write=True) as db:
        repository = SessionRepository(db)
        stored = repository.get(record.id, for_update=True)
        assert (stored.step, stored.version, stored.last_loss) == (1, 2, 0.5)
        stored.name = "renamed"
        repository.touch(stored)  # an ORM change: the mapper bumps the version too
        assert stored.version == 3
        stale = repository.row(record.id)
        stale.version = 2
        repository.advance(stale, step=2, schedule_state={}, last_loss=None)
        with pytest.raises(StaleDataError):
            send(db)  # the UPDATE is held until the unit of work sends it


def test_large_arrays_are_stored_in_chunks_and_read_back_whole(migrated_database_url):
    """Rows of at most `chunk_bytes`, as many as the array needs; read back whole and exact,
    writable on request, whatever the sizes' remainders."""
    database = Database(migrated_database_url, chunk_bytes=1024)
    rng = np.random.default_rng(1)
    arrays = {
        "param/small": rng.standard_normal(7).astype(np.float32),  # 28 bytes: 1 row
        "param/exact": rng.standard_normal(256).astype(np.float32),  # 1024 bytes: 1 row
        "param/over": rng.standard_normal(257).astype(np.float32),  # 1028 bytes: 2 rows
        "exp_avg/big": rng.standard_normal((10, 50)),  # 4000 bytes: 4 rows
        "param/empty": np.zeros((0, 3), np.float32),  # 0 bytes: 1 row
        "step/big": np.array(3, np.int64),
    }
    record = new_record()
    try:
        with database.transaction(write=True) as db:
            repository = SessionRepository(db)
            repository.add(record)
            SessionArrays(db).save(record.id, arrays)
        with database.transaction(write=False) as db:
            rows = db.execute(
                select(SessionArray.key, SessionArray.chunk, SessionArray.data).where(
                    SessionArray.session_id == record.id
                )
            ).all()
            loaded = SessionArrays(db).load(record.id)
            writable = SessionArrays(db).load(record.id, writable=True)
    finally:
        database.dispose()
    chunks = {}
    for key, chunk, data in rows:
        assert len(data) <= 1024
        chunks.setdefault(key, []).append(chunk)
    assert {key: sorted(numbers) for key, numbers in chunks.items()} == {
        "param/small": [0],
        "param/exact": [0],
        "param/over": [0, 1],
        "exp_avg/big": [0, 1, 2, 3],
        "param/empty": [0],
        "step/big": [0],
    }
    for key, array in arrays.items():
        np.testing.assert_array_equal(loaded[key], array)
        assert (loaded[key].dtype, loaded[key].shape) == (array.dtype, array.shape)
        assert not loaded[key].flags.writeable
        assert writable[key].flags.writeable
        np.testing.assert_array_equal(writable[key], array)


def test_an_array_missing_a_chunk_is_an_error_not_a_shorter_array(migrated_database_url):
    database = Database(migrated_database_url, chunk_bytes=1024)
    record = new_record()
    try:
        with database.transaction(write=True) as db:
            repository = SessionRepository(db)
            repository.add(record)
            SessionArrays(db).save(record.id, {"param/w": np.zeros(1000)})  # 8 chunks
            db.execute(
                delete(SessionArray).where(
                    SessionArray.session_id == record.id, SessionArray.chunk == 7
                )
            )
        with database.transaction(write=False) as db, pytest.raises(CorruptChunksError):
            SessionArrays(db).load(record.id)
    finally:
        database.dispose()


def test_the_default_chunk_size_is_the_settings_default():
    assert Settings().array_chunk_bytes == CHUNK_BYTES <= 64 * 1024**2


def test_some_chunks_are_rewritten_with_their_version_and_the_log_dropped_up_to_one(
    migrated_database_url,
):
    """`save_chunks` rewrites only the chunks named, recording the version (on PostgreSQL by
    COPY: 64 KiB chunks, 256 KiB and more in all); the other chunks and the log stay until
    `drop_log_through` drops the entries up to a version."""
    database = Database(migrated_database_url, chunk_bytes=64 * 1024)
    store = database.arrays
    rng = np.random.default_rng(2)
    before = {"param/w": rng.standard_normal(80_000), "step/w": np.array(4, np.int64)}  # 10 chunks
    after = {key: array + 1 for key, array in before.items()}
    record = new_record()
    try:
        with database.transaction(write=True) as db:
            SessionRepository(db).add(record)
            store.save(db, record.id, before)
            for version in (2, 3, 4):
                entry = LoggedStep(version, 0, ["w"], {}, {}, None, False, {"w": before["param/w"]})
                store.append_log(db, record.id, entry)
        with database.transaction(write=True) as db:
            chunks = {"param/w": [1, 3, 4, 5, 9], "step/w": [0]}
            store.save_chunks(db, record.id, after, chunks, 7)
            store.drop_log_through(db, record.id, 3)
        with database.transaction(write=False) as db:
            stored = store.read(db, record.id, writable=False)
    finally:
        database.dispose()
    assert [entry.version for entry in stored.log] == [4]
    new = {1, 3, 4, 5, 9}
    assert stored.written_at == {
        "param/w": tuple(7 if chunk in new else 0 for chunk in range(10)),
        "step/w": (7,),
    }
    assert stored.chunk_bytes["param/w"] == 64 * 1024
    theta, elements = stored.checkpoint["param/w"], 64 * 1024 // 8
    for chunk in range(10):
        part = slice(chunk * elements, (chunk + 1) * elements)
        expected = after if chunk in new else before
        np.testing.assert_array_equal(theta[part], expected["param/w"][part])
    assert int(stored.checkpoint["step/w"]) == 5
