"""One suite, every sink: idempotent by key, durable when write returns."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import uuid

import pytest

from synctask import CallbackSink, MemorySink, SQLiteSink


class _KeyedCallback:
    """A client callback that keeps rows by key, as the callback sink's contract asks."""

    def __init__(self):
        self.rows = {}

    async def __call__(self, rows):
        for row in rows:
            self.rows[(row["code"], row["day"])] = dict(row)


PG_DSN = os.environ.get("SYNCTASK_TEST_PG", "host=127.0.0.1 port=5432 dbname=test user=postgres connect_timeout=3")


def _postgres_or_skip():
    try:
        import psycopg
    except ImportError:
        pytest.skip("psycopg is not installed")
    try:
        return psycopg.connect(PG_DSN, autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL server at {PG_DSN!r}: {exc}")


@pytest.fixture(params=["memory", "sqlite", "callback", "postgres", "jsonl", "parquet", "duckdb"])
def sink_and_reader(request, tmp_path):
    if request.param == "duckdb":
        import duckdb

        from synctask.sinks.duckdb import DuckDBSink

        sink = DuckDBSink(tmp_path / "d.duckdb", "bars", ["code", "day"])

        def read_duckdb():
            asyncio.run(sink.close())  # one process, one connection: close before reading
            with duckdb.connect(str(tmp_path / "d.duckdb")) as db:
                return sorted(db.execute("SELECT code, day, close FROM bars").fetchall())

        yield sink, read_duckdb
        return
    if request.param == "parquet":
        import pyarrow.parquet as pq

        from synctask.sinks.parquet import ParquetSink

        sink = ParquetSink(tmp_path / "bars", ["code", "day"], partition_by="code")

        def read_parquet():
            asyncio.run(sink.close())  # compaction happens at the end of a run
            rows = pq.read_table(tmp_path / "bars").to_pylist()
            return sorted((str(r["code"]), r["day"], r["close"]) for r in rows)

        yield sink, read_parquet
        return
    if request.param == "jsonl":
        from synctask.sinks.jsonl import JsonlSink

        path = tmp_path / "d.jsonl"
        sink = JsonlSink(path, ["code", "day"])

        def read_jsonl():
            asyncio.run(sink.close())  # compaction happens at the end of a run
            rows = [json.loads(line) for line in path.read_text().splitlines()]
            return sorted((r["code"], r["day"], r["close"]) for r in rows)

        yield sink, read_jsonl
        return
    if request.param == "postgres":
        from synctask.sinks.postgres import PostgresSink

        admin = _postgres_or_skip()
        table = f"synctask_test_{uuid.uuid4().hex[:10]}"
        sink = PostgresSink(PG_DSN, table, ["code", "day"])

        def read_pg():
            return sorted(admin.execute(f'SELECT code, day, close FROM "{table}"').fetchall())

        yield sink, read_pg
        asyncio.run(sink.close())
        admin.execute(f'DROP TABLE IF EXISTS "{table}"')
        admin.close()
        return
    if request.param == "memory":
        sink = MemorySink(["code", "day"])
        yield sink, lambda: sorted(tuple(r.values()) for r in sink.rows.values())
    elif request.param == "sqlite":
        sink = SQLiteSink(tmp_path / "d.db", "bars", ["code", "day"])

        def read():
            db = sqlite3.connect(tmp_path / "d.db")
            try:
                return sorted(db.execute("SELECT code, day, close FROM bars").fetchall())
            finally:
                db.close()

        yield sink, read
    else:
        target = _KeyedCallback()
        sink = CallbackSink(target)
        yield sink, lambda: sorted(tuple(r.values()) for r in target.rows.values())
    asyncio.run(sink.close())


def test_writing_the_same_rows_twice_leaves_them_once(sink_and_reader):
    sink, read = sink_and_reader
    rows = [{"code": "A", "day": "2024-01-01", "close": 1.5}, {"code": "B", "day": "2024-01-01", "close": 2.5}]

    async def go():
        await sink.write(rows)
        await sink.write(rows)

    asyncio.run(go())
    assert read() == [("A", "2024-01-01", 1.5), ("B", "2024-01-01", 2.5)]


@pytest.mark.parametrize("bad", [{"code": "C", "close": 3.5}, {"code": None, "day": "2024-01-02", "close": 3.5}])
def test_a_batch_with_a_row_lacking_a_key_value_is_refused_whole(sink_and_reader, bad):
    from synctask.sinks.base import MissingKey

    sink, read = sink_and_reader
    good = {"code": "A", "day": "2024-01-01", "close": 1.5}
    if getattr(sink, "key", None) is None:
        pytest.skip("a callback sink has no key: its function decides")
    with pytest.raises(MissingKey, match="key column '(day|code)'"):
        asyncio.run(sink.write([good, bad]))
    asyncio.run(sink.write([good]))
    assert read() == [("A", "2024-01-01", 1.5)], "nothing of the refused batch was written"


def test_a_later_write_of_the_same_key_wins(sink_and_reader):
    sink, read = sink_and_reader

    async def go():
        await sink.write([{"code": "A", "day": "d", "close": 1.0}])
        await sink.write([{"code": "A", "day": "d", "close": 9.0}])

    asyncio.run(go())
    assert read() == [("A", "d", 9.0)]


def test_sqlite_sink_needs_a_key(tmp_path):
    with pytest.raises(ValueError, match="needs key"):
        SQLiteSink(tmp_path / "x.db", "t", [])


def test_sqlite_sink_adds_columns_that_appear_later(tmp_path):
    sink = SQLiteSink(tmp_path / "x.db", "t", ["k"])

    async def go():
        await sink.write([{"k": 1, "a": "x"}])
        await sink.write([{"k": 2, "a": "y", "b": 3}])
        await sink.close()

    asyncio.run(go())
    db = sqlite3.connect(tmp_path / "x.db")
    assert db.execute("SELECT k, a, b FROM t ORDER BY k").fetchall() == [(1, "x", None), (2, "y", 3)]



def test_sqlite_sink_rows_missing_columns_odd_values_and_a_key_only_table(tmp_path):
    """The fast path (every column there, plain values) and the slow one give the same table."""
    import datetime
    import decimal

    sink = SQLiteSink(tmp_path / "x.db", "t", ["k"])
    keys_only = SQLiteSink(tmp_path / "x.db", "only", ["k"])
    day = datetime.date(2024, 1, 2)

    async def go():
        await sink.write([{"k": 1, "a": "x", "b": 1.5}, {"k": 2, "a": "y", "b": None}])
        await sink.write([{"k": 3, "b": 2}, {"a": "z", "k": 4, "b": 3}])  # a row without "a"; another order
        await sink.write([{"k": 5, "a": day, "b": decimal.Decimal("1.25")}, {"k": 6, "a": True, "b": b"\x00"}])
        await keys_only.write([{"k": 1}, {"k": 2}])
        await sink.close()
        await keys_only.close()

    asyncio.run(go())
    db = sqlite3.connect(tmp_path / "x.db")
    assert db.execute("SELECT k, a, b FROM t ORDER BY k").fetchall() == [
        (1, "x", 1.5), (2, "y", None), (3, None, 2), (4, "z", 3), (5, "2024-01-02", "1.25"), (6, 1, b"\x00")]
    assert db.execute("SELECT k FROM only ORDER BY k").fetchall() == [(1,), (2,)]

def test_a_row_without_its_key_columns_is_refused_with_the_column_named():
    sink = MemorySink(["code"])
    with pytest.raises(ValueError, match="missing key column 'code'"):
        asyncio.run(sink.write([{"day": 1}]))


def test_jsonl_sink_after_a_crash_and_a_rerun_holds_each_key_once(tmp_path):
    from synctask.sinks.jsonl import JsonlSink

    path = tmp_path / "d.jsonl"
    path.write_text('{"k": 1, "v": "a"}\n{"k": 2, "v": "b"}\n{"k": 1, "v": "a"}\n{"k": 3, "v"')  # killed mid-line
    sink = JsonlSink(path, ["k"])

    async def rerun():
        await sink.write([{"k": 1, "v": "a"}, {"k": 3, "v": "c"}])
        await sink.close()

    asyncio.run(rerun())
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted((r["k"], r["v"]) for r in rows) == [(1, "a"), (2, "b"), (3, "c")]


def test_parquet_sink_partitions_by_the_chosen_column_and_compacts_to_one_file(tmp_path):
    from synctask.sinks.parquet import ParquetSink

    sink = ParquetSink(tmp_path / "daily", ["code", "day"], partition_by="day")

    async def go():
        for code in ("A", "B", "C"):
            await sink.write([{"code": code, "day": "d1", "v": 1}, {"code": code, "day": "d2", "v": 2}])
        await sink.write([{"code": "A", "day": "d1", "v": 9}])  # a re-run with a newer value
        await sink.close()

    asyncio.run(go())
    partitions = sorted(p.name for p in (tmp_path / "daily").iterdir())
    assert partitions == ["day=d1", "day=d2"]
    assert all(len(list((tmp_path / "daily" / p).glob("*.parquet"))) == 1 for p in partitions)
    import pyarrow.parquet as pq

    d1 = sorted((r["code"], r["v"]) for r in pq.read_table(tmp_path / "daily" / "day=d1").to_pylist())
    assert d1 == [("A", 9), ("B", 1), ("C", 1)]


@pytest.mark.parametrize("extra", ["note", "filename"])  # "filename" is DuckDB's own column: the other path
def test_parquet_compaction_keeps_the_last_version_and_columns_that_appear_later(tmp_path, extra):
    import pyarrow.parquet as pq

    from synctask.sinks.parquet import ParquetSink

    async def go():
        sink = ParquetSink(tmp_path / "bars", ["code", "day"])
        await sink.write([{"code": c, "day": "d", "close": 1.0} for c in "ABC"])
        await sink.write([{"code": "B", "day": "d", "close": 2.0, extra: "x"}])
        await sink.close()

    asyncio.run(go())
    files = list((tmp_path / "bars").glob("*"))
    assert len(files) == 1  # one file, no scratch folder left behind
    rows = sorted(pq.read_table(files[0]).to_pylist(), key=lambda r: r["code"])
    assert [(r["code"], r["close"], r[extra]) for r in rows] == [("A", 1.0, None), ("B", 2.0, "x"), ("C", 1.0, None)]


def test_stream_sink_hands_batches_to_an_async_for_and_waits_for_them():
    from synctask.sinks import StreamSink

    async def go():
        sink = StreamSink()
        seen = []
        write_returned = []

        async def consume():
            async for rows in sink:
                seen.append([r["i"] for r in rows])
                await asyncio.sleep(0.01)
                assert not write_returned or len(write_returned) < len(seen)  # not before handled

        consumer = asyncio.create_task(consume())
        for i in range(3):
            await sink.write([{"i": i}, {"i": i + 10}])
            write_returned.append(i)
        await sink.close()
        await consumer
        return seen

    assert asyncio.run(go()) == [[0, 10], [1, 11], [2, 12]]


def test_group_commit_joins_concurrent_writes_and_fails_only_the_bad_batch():
    import asyncio

    from synctask.sinks.group import GroupCommit

    calls: list[int] = []
    written: list[dict] = []

    def write_many(batches, wait):
        calls.append(len(batches))
        rows = [row for batch in batches for row in batch]
        if any(row.get("bad") for row in rows):
            raise ValueError("the disk refused a bad row")
        written.extend(rows)

    async def main():
        group = GroupCommit(write_many)
        results = await asyncio.gather(*(group.write([{"i": i, "bad": i == 7}]) for i in range(50)),
                                       return_exceptions=True)
        await group.wait_idle()
        return results

    results = asyncio.run(main())
    failed = [i for i, r in enumerate(results) if isinstance(r, Exception)]
    assert failed == [7] and "bad row" in str(results[7])
    assert sorted(row["i"] for row in written) == [i for i in range(50) if i != 7]
    assert calls[0] > 1  # the first transaction took many tasks' rows at once


def test_a_small_group_waits_one_loop_turn_for_the_rows_that_come_next_and_a_large_one_does_not():
    from synctask.sinks.group import GATHER, GroupCommit

    calls: list[int] = []

    async def main():
        group = GroupCommit(lambda batches, wait: calls.append(len(batches)))

        async def later(turns: int, i: int) -> None:
            for _ in range(turns):
                await asyncio.sleep(0)
            await group.write([{"i": i}])

        await asyncio.gather(group.write([{"i": 0}]), later(1, 1))  # the next turn's rows join the first's
        await asyncio.gather(*(group.write([{"i": i}]) for i in range(GATHER)), later(1, -1))
        await asyncio.gather(group.write([{"i": 0}]), later(4, 1))  # too late: a transaction of its own

    asyncio.run(main())
    assert calls == [2, GATHER, 1, 1, 1]


def test_sqlite_sink_rows_of_concurrent_tasks_all_land_once(tmp_path):
    import asyncio
    import sqlite3

    from synctask.sinks import SQLiteSink

    async def main():
        sink = SQLiteSink(tmp_path / "s.db", "t", ["id"])
        await asyncio.gather(*(sink.write([{"id": i, "v": i * 2}, {"id": i + 1000, "v": 0}]) for i in range(300)))
        await sink.write([{"id": 5, "v": -1}])  # a re-run overwrites
        await sink.close()

    asyncio.run(main())
    with sqlite3.connect(tmp_path / "s.db") as db:
        assert db.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 600
        assert db.execute("SELECT v FROM t WHERE id = 5").fetchone()[0] == -1


@pytest.mark.parametrize("count", [1, 3, 255, 257, 1_000])
def test_sqlite_sink_writes_many_rows_per_statement_in_order_whatever_their_number(tmp_path, count):
    """Rows go in several per INSERT (then powers of two): every one lands, a key met twice in one
    batch keeps its later row, and a column that first appears mid-batch is added."""
    import asyncio
    import sqlite3

    from synctask.sinks import SQLiteSink

    rows = [{"id": i % 700, "v": i, "note": {"i": i}} for i in range(count)]
    if count > 2:
        rows[count // 2] = {**rows[count // 2], "late": "yes"}

    async def main():
        sink = SQLiteSink(tmp_path / "s.db", "t", ["id"])
        await sink.write(rows)
        await sink.close()

    asyncio.run(main())
    expected = {row["id"]: row for row in rows}  # the last row of each key
    with sqlite3.connect(tmp_path / "s.db") as db:
        found = {i: (v, note, late) for i, v, note, late in db.execute('SELECT id, v, note, late FROM t')} \
            if count > 2 else {i: (v, note, None) for i, v, note in db.execute("SELECT id, v, note FROM t")}
    assert found == {k: (r["v"], str(r["note"]), r.get("late")) for k, r in expected.items()}


JSONL_GROWTH = '''
import asyncio, sys
from synctask.sinks.jsonl import JsonlSink

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096

async def go(path):
    sink = JsonlSink(path, ["id"])
    async def batch(start):
        await sink.write([{"id": i, "day": "2024-01-02", "value": i * 0.5, "note": "x" * 40}
                          for i in range(start, start + 1000)])
    for start in range(0, 50_000, 1000):
        await batch(start)
    before = rss()
    for start in range(50_000, 300_000, 1000):
        await batch(start)
    await batch(0)  # a key written again: the close compacts
    after = rss()
    await sink.close()
    print(before, after, rss())

asyncio.run(go(sys.argv[1]))
'''


def test_the_jsonl_sinks_memory_does_not_grow_with_the_rows_it_has_written(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "rows.jsonl"
    said = subprocess.run([sys.executable, "-c", JSONL_GROWTH, str(path)], capture_output=True, text=True,
                          timeout=300, check=True).stdout.split()
    before, after, closed = map(int, said)
    # 250,000 more rows (about 25 MB of lines): a sink that kept each key and line would grow by
    # more than that; this one by its index's page cache at most.
    assert after - before < 12 * 2**20, (before, after)
    assert closed - before < 12 * 2**20, (before, closed)
    lines = path.read_text().splitlines()
    assert len(lines) == 300_000 and len({json.loads(line)["id"] for line in lines}) == 300_000


def test_a_jsonl_file_that_no_longer_matches_its_index_is_read_again(tmp_path):
    from synctask.sinks.jsonl import JsonlSink, index_path

    path = tmp_path / "d.jsonl"

    async def run(rows):
        sink = JsonlSink(path, ["k"])
        await sink.write(rows)
        await sink.close()

    asyncio.run(run([{"k": 1, "v": "a"}, {"k": 2, "v": "b"}]))
    assert index_path(path).exists()
    with path.open("a") as edited:  # by hand, or a process killed between the file and its index
        edited.write('{"k": 2, "v": "B"}\n')
    asyncio.run(run([{"k": 3, "v": "c"}, {"k": 1, "v": "a"}]))
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted((r["k"], r["v"]) for r in rows) == [(1, "a"), (2, "B"), (3, "c")]
    index_path(path).write_bytes(b"not a database")  # a damaged index is only a cache
    asyncio.run(run([{"k": 1, "v": "z"}]))
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted((r["k"], r["v"]) for r in rows) == [(1, "z"), (2, "B"), (3, "c")]



def test_jsonl_new_keys_go_without_a_lookup_and_a_known_key_among_them_still_ends_once(tmp_path):
    """All-new batches are appended without looking their keys up; a batch where some key was
    written before (same or changed) appends it again, and the next batches are looked up first:
    a repeat appends nothing. Opened again (as after a kill) or closed, each key is there once,
    its last version."""
    from synctask.sinks.jsonl import JsonlSink

    path = tmp_path / "d.jsonl"

    def lines() -> list[tuple[int, str]]:
        return [(r["k"], r["v"]) for r in map(json.loads, path.read_text().splitlines())]

    async def run():
        sink = JsonlSink(path, ["k"])
        await sink.write([{"k": 1, "v": "a"}, {"k": 2, "v": "b"}])
        await sink.write([{"k": 3, "v": "c"}])  # all new: the quick way
        assert lines() == [(1, "a"), (2, "b"), (3, "c")]
        await sink.write([{"k": 4, "v": "d"}, {"k": 2, "v": "B"}, {"k": 3, "v": "c"}])  # one new, one changed, one same
        assert lines()[3:] == [(4, "d"), (2, "B"), (3, "c")]  # (all appended: the index said which was known)
        await sink.write([{"k": 4, "v": "d"}, {"k": 2, "v": "B"}])  # looked up now: nothing new
        assert len(lines()) == 6
        await sink.write([{"k": 5, "v": "e"}])  # looked up, all new: the quick way again
        await sink.write([{"k": 1, "v": "A"}])
        sink._commit()  # a kill -9 here: the index is as of now, the file not compacted
        sink._file.close()
        sink._db.close()

    asyncio.run(run())
    assert lines()[-2:] == [(5, "e"), (1, "A")]

    async def reopen():
        sink = JsonlSink(path, ["k"])
        await sink.write([{"k": 6, "v": "f"}])
        await sink.close()

    asyncio.run(reopen())
    assert sorted(lines()) == [(1, "A"), (2, "B"), (3, "c"), (4, "d"), (5, "e"), (6, "f")]
    assert len(lines()) == 6

def test_a_jsonl_line_is_compact_sorted_json_and_values_json_lacks_keep_their_text(tmp_path):
    import datetime
    import enum
    import math

    from synctask.sinks.jsonl import JsonlSink

    class Colour(enum.Enum):
        RED = "red"

    class Code(str):
        pass

    stamp = datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    rows = [{"k": 1, "b": [1.5, None, True], "a": "ü\n\u2028"},
            {"k": 2, "when": stamp, "day": stamp.date(), "code": Code("x")},
            {"k": 3, "big": 2 ** 70, "nested": {1: "one"}},
            {"k": 4, "nan": math.nan, "colour": Colour.RED}]
    path = tmp_path / "d.jsonl"

    async def run():
        sink = JsonlSink(path, ["k"])
        await sink.write(rows)
        await sink.write(rows)  # the same rows again: nothing appended
        await sink.close()

    asyncio.run(run())
    assert path.read_text(encoding="utf-8").split("\n") == [
        '{"a":"ü\\n\u2028","b":[1.5,null,true],"k":1}',
        '{"code":"x","day":"2024-01-02","k":2,"when":"2024-01-02 03:04:05+00:00"}',  # str(), as before
        '{"big":1180591620717411303424,"k":3,"nested":{"1":"one"}}',
        '{"colour":"red","k":4,"nan":null}', '']  # (\u2028 is no line end in JSON Lines)
    asyncio.run(run())
    assert path.read_text(encoding="utf-8").count("\n") == 4


@pytest.mark.parametrize("era", ["spaced lines", "compact-1"])
def test_a_jsonl_index_made_by_an_earlier_version_is_rebuilt_and_its_rows_are_not_written_again(tmp_path, era):
    """Before, lines had spaces and the index digested their text; then lines were compact and
    their digests blake2b blobs ('compact-1'). The same rows fetched again must not look changed
    (a rewrite of the file) once the index is made the new way."""
    import hashlib
    import sqlite3

    from synctask.sinks.jsonl import JsonlSink, index_path

    path = tmp_path / "d.jsonl"
    old = (['{"k": 1, "v": "a"}', '{"k": 2, "v": "b"}'] if era == "spaced lines"
           else ['{"k":1,"v":"a"}', '{"k":2,"v":"b"}'])
    path.write_text("".join(line + "\n" for line in old))
    with sqlite3.connect(index_path(path)) as db:  # the index as the earlier version left it
        db.execute("CREATE TABLE k(key TEXT PRIMARY KEY, digest BLOB, line INTEGER) WITHOUT ROWID")
        db.execute("CREATE TABLE meta(name TEXT PRIMARY KEY, value) WITHOUT ROWID")
        db.executemany("INSERT INTO k VALUES (?, ?, ?)",
                       [(f"i{n + 1}", hashlib.blake2b(line.encode(), digest_size=8).digest(), n)
                        for n, line in enumerate(old)])
        db.executemany("INSERT INTO meta VALUES (?, ?)", [("size", path.stat().st_size), ("lines", 2), ("dirty", 0)]
                       + ([("digests", "compact-1")] if era == "compact-1" else []))
    db.close()
    before = path.read_bytes()

    async def run(rows):
        sink = JsonlSink(path, ["k"])
        await sink.write(rows)
        await sink.close()

    asyncio.run(run([{"k": 1, "v": "a"}, {"k": 2, "v": "b"}]))
    assert path.read_bytes() == before  # unchanged rows: nothing appended, nothing compacted
    asyncio.run(run([{"k": 2, "v": "B"}]))
    assert path.read_text().splitlines() == [old[0], '{"k":2,"v":"B"}']
    with sqlite3.connect(index_path(path)) as db:  # digests are integers now, one per key
        assert [type(digest) for (digest,) in db.execute("SELECT digest FROM k")] == [int, int]
    db.close()


def test_sqlite_sink_waits_for_another_writers_lock_off_the_loop_and_keeps_the_order(tmp_path):
    import asyncio
    import sqlite3
    import time

    from synctask.sinks import SQLiteSink

    async def main():
        sink = SQLiteSink(tmp_path / "s.db", "t", ["id"])
        await sink.write([{"id": 1, "v": 0}])
        other = sqlite3.connect(tmp_path / "s.db", isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")  # another program writes to the same file
        first = asyncio.create_task(sink.write([{"id": 1, "v": 1}]))
        await asyncio.sleep(0.01)
        second = asyncio.create_task(sink.write([{"id": 1, "v": 2}]))  # after it: must not land first
        started = time.perf_counter()
        ticks = 0
        while time.perf_counter() - started < 0.5:  # the loop goes on meanwhile
            await asyncio.sleep(0.01)
            ticks += 1
        assert not first.done() and not second.done()
        other.execute("COMMIT")
        await asyncio.wait_for(asyncio.gather(first, second), 10)
        await sink.close()
        other.close()
        return ticks

    assert asyncio.run(main()) >= 5  # (about 50 on an idle machine; a loop blocked on the lock: 1)
    with sqlite3.connect(tmp_path / "s.db") as db:
        assert db.execute("SELECT v FROM t WHERE id = 1").fetchall() == [(2,)]


def test_sqlite_sink_and_state_keep_their_wal_bounded_over_many_commits(tmp_path):
    import asyncio
    import hashlib
    import os
    import time

    from synctask.sinks import SQLiteSink
    from synctask.store import RunRecord, SQLiteStore, TaskRecord

    async def main():
        sink = SQLiteSink(tmp_path / "s.db", "t", ["id"])
        store = SQLiteStore(tmp_path / "state.db")
        store.start_run(RunRecord("r", "p", "t", time.time(), "running", None, None))
        biggest = [0, 0]
        for commit in range(3_000):  # random keys: each commit dirties pages all over the index
            keys = [hashlib.sha1(f"{commit}-{i}".encode()).hexdigest() for i in range(10)]
            await sink.write([{"id": key, "text": "x" * 100} for key in keys])
            for key in keys:
                store.record(TaskRecord(key, "p", "r", "done", 1, None, time.time(), None, None))
            store.flush()
            for n, path in enumerate((tmp_path / "s.db-wal", tmp_path / "state.db-wal")):
                biggest[n] = max(biggest[n], os.path.getsize(path))
        await sink.close()
        store.close()
        return biggest

    sink_wal, state_wal = asyncio.run(main())
    assert sink_wal < 16 * 2**20 and state_wal < 16 * 2**20, (sink_wal, state_wal)  # checkpointed as it goes
