"""DynamoDB: global secondary indexes kept sorted as items change, and transactions that
undo only what they wrote.

What moto 5.2.5 walks (``moto/dynamodb/models/``):

- ``Table.query`` on an index sorts every item of the table (``all_items``), keeps those
  of the queried partition, sorts them again and skips to ``ExclusiveStartKey`` one by
  one: every page of a listing costs O(n log n) in the table's size.
- ``DynamoDBBackend.transact_write_items`` deep-copies every table it writes to before
  it starts, so that it can put the copy back on failure: O(table) per transaction.
- ``Item.__init__`` (every put, so every item of a BatchWriteItem) adds the item's
  attributes one at a time to a ``LimitedSizeDict``, whose ``__setitem__`` sizes every
  attribute already there to check the 400 KB item limit: O(attributes²) sizings per item,
  about a third of a 25-item BatchWriteItem's time for the job table's items.

What replaces it here:

- Each GSI of a table is a dictionary from partition-key value to the partition's sort
  keys in moto's order (the index's range key, then the table's keys), in a sorted list.
  It is built from the table by the first query of the index and then follows every
  write: ``Table.put_item``, ``Table.delete_item`` and ``DynamoDBBackend.update_item``
  (which changes an item in place) re-file the item they touched. Every other write path
  of moto (BatchWriteItem, PartiQL, transactions) goes through those three. An index is
  built again when its definition changes (UpdateTable) or the table's item store is
  replaced (a restore).
- A query of the usual shape (one GSI, partition key equality, at most one condition on
  the range key, no legacy ``QueryFilter``) bisects to its first key and reads no more
  than its page; then it applies moto's own limit, size limit, LastEvaluatedKey,
  projection, FilterExpression and ProjectionExpression code, in moto's order. Any other
  query, and every query of an index that could not be maintained (say, values of mixed
  types under one key), is moto's own ``Table.query``.
- ``transact_write_items`` is moto's, except that it records each item before writing
  it and on failure puts those items back (and drops the stream records it made).
- ``Item.__init__`` keeps a running total of the attributes' sizes, each sized once, and
  raises moto's ``ItemSizeTooLarge`` at the attribute that takes the total past moto's
  limit, as moto's per-attribute check does (sizes only add up, so the first attribute
  past the limit is the same).

Same answers as moto, item for item, with one exception: moto ends a page at 1 MB of
results even while it skips items outside the range-key condition; here those items are
not read, so a page whose items nearly fill a megabyte may end one item later.

Writes and queries of one table hold the table's lock (moto itself has none), so a query
never sees an index half-way through an update.
"""

from __future__ import annotations

import bisect
import copy
import logging
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from moto.dynamodb.comparisons import get_filter_expression
from moto.dynamodb.exceptions import (
    ConditionalCheckFailed,
    ItemSizeTooLarge,
    MockValidationException,
    MultipleTransactionsException,
    TooManyTransactionsException,
    TransactionCanceledException,
    TransactWriteSingleOpException,
)
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import DynamoType, Item, LimitedSizeDict
from moto.dynamodb.models.table import RESULT_SIZE_LIMIT, GlobalSecondaryIndex, Table
from moto.dynamodb.models.utilities import bytesize

from infra.moto_speedups.patching import Patches

log = logging.getLogger("infra.moto_speedups")

ItemKey = tuple[Any, Any]  # (hash key, range key or None), as DynamoType: a table.items key
SortKey = tuple[Any, ...]  # cast values of the index's sort attributes, after its hash key
PartitionKey = tuple[str, Any]  # (type, cast value) of the index's hash key


class _Unindexable(Exception):
    """An index cannot be kept for this table (unsupported shape, mixed types, a value
    that cannot be a key); its queries go to moto's own code."""


@dataclass(eq=False)
class _Gsi:
    """One global secondary index of one table, as sorted partitions."""

    name: str
    schema: list[dict[str, str]]  # the definition it was built for
    hash_attr: str
    range_attr: str | None
    sort_attrs: list[str]  # moto's sort order for this index: the hash key first
    partitions: dict[PartitionKey, list[SortKey]] = field(default_factory=dict)
    refs: dict[PartitionKey, dict[SortKey, ItemKey]] = field(default_factory=dict)
    where: dict[ItemKey, tuple[PartitionKey, SortKey]] = field(default_factory=dict)

    @classmethod
    def for_index(cls, table: Any, index: Any) -> _Gsi:
        hash_keys = [k["AttributeName"] for k in index.schema if k["KeyType"] == "HASH"]
        range_keys = [k["AttributeName"] for k in index.schema if k["KeyType"] == "RANGE"]
        if len(hash_keys) != 1 or len(range_keys) > 1:
            raise _Unindexable(f"index {index.name}: multi-attribute keys")
        # The attribute lists moto's Table.query builds for an index; its sort order
        # follows from them (_generate_attr_to_sort_by).
        hash_attrs = [hash_keys[0], table.hash_key_attr]
        if range_keys:
            range_attrs = [range_keys[0], table.range_key_attr]
        else:
            range_attrs = [table.range_key_attr or table.hash_key_attr, table.range_key_attr]
        gsi = cls(
            name=index.name,
            schema=copy.deepcopy(index.schema),
            hash_attr=hash_keys[0],
            range_attr=range_keys[0] if range_keys else None,
            sort_attrs=table._generate_attr_to_sort_by(hash_attrs, range_attrs),
        )
        for item in _items(table):
            gsi._file(item, sort=False)
        try:
            for keys in gsi.partitions.values():
                keys.sort()
        except TypeError as error:
            raise _Unindexable(f"index {index.name}: {error}") from error
        return gsi

    def _member(self, item: Any) -> bool:
        # moto's query keeps an item that has the hash key and every range key.
        return self.hash_attr in item.attrs and (
            self.range_attr is None or self.range_attr in item.attrs
        )

    def _file(self, item: Any, sort: bool = True) -> None:
        if not self._member(item):
            return
        item_key = (item.hash_key, item.range_key)
        try:
            partition = partition_key(item.attrs[self.hash_attr])
            sort_key = tuple(item.attrs[a].cast_value for a in self.sort_attrs[1:])
            keys = self.partitions.setdefault(partition, [])
            if sort:
                bisect.insort(keys, sort_key)
            else:
                keys.append(sort_key)
            self.refs.setdefault(partition, {})[sort_key] = item_key
        except TypeError as error:  # unhashable or unorderable values under a key
            raise _Unindexable(f"index {self.name}: {error}") from error
        self.where[item_key] = (partition, sort_key)

    def refile(self, table: Any, item_key: ItemKey) -> None:
        """The item under ``item_key`` was written or deleted: move it to where it goes now."""
        old = self.where.pop(item_key, None)
        if old is not None:
            partition, sort_key = old
            keys = self.partitions[partition]
            at = bisect.bisect_left(keys, sort_key)
            if at == len(keys) or keys[at] != sort_key:
                raise _Unindexable(f"index {self.name}: lost track of an item")
            del keys[at]
            del self.refs[partition][sort_key]
            if not keys:
                del self.partitions[partition], self.refs[partition]
        item = _lookup(table, item_key)
        if item is not None:
            self._file(item)


@dataclass(eq=False)
class _TableState:
    lock: threading.RLock = field(default_factory=threading.RLock)
    items: Any = None  # the table's item store the indexes describe
    gsis: dict[str, _Gsi] = field(default_factory=dict)
    broken: set[str] = field(default_factory=set)  # indexes left to moto's own query


# Kept beside the tables, not in them: moto deep-copies tables (backups), and a lock
# cannot be copied.
_states: weakref.WeakKeyDictionary[Any, _TableState] = weakref.WeakKeyDictionary()
_states_lock = threading.Lock()


def _state(table: Any) -> _TableState:
    state = _states.get(table)
    if state is None:
        with _states_lock:
            state = _states.setdefault(table, _TableState())
    if state.items is not table.items:
        state.gsis.clear()
        state.broken.clear()
        state.items = table.items
    return state


def partition_key(value: Any) -> PartitionKey:
    """How moto compares hash keys (DynamoType equality), as a dictionary key."""
    return (value.type, value.cast_value)


def _items(table: Any) -> Iterator[Any]:
    for bucket in table.items.values():
        if table.range_key_attr:
            yield from bucket.values()
        else:
            yield bucket


def _lookup(table: Any, item_key: ItemKey) -> Any:
    hash_key, range_key = item_key
    bucket = table.items.get(hash_key)  # .get: table.items is a defaultdict
    if bucket is None or not table.range_key_attr:
        return bucket
    return bucket.get(range_key)


def _gsi(table: Any, state: _TableState, index_name: str) -> _Gsi | None:
    """The maintained index ``index_name`` of ``table`` (built now if need be), or None
    if it is not a GSI this module can keep. Hold the state's lock."""
    if index_name in state.broken:
        return None
    index = next((i for i in table.global_indexes if i.name == index_name), None)
    if not isinstance(index, GlobalSecondaryIndex):
        return None
    gsi = state.gsis.get(index_name)
    if gsi is not None and gsi.schema == index.schema:
        return gsi
    try:
        gsi = _Gsi.for_index(table, index)
    except _Unindexable as error:
        _give_up(state, index_name, error)
        return None
    state.gsis[index_name] = gsi
    return gsi


def _give_up(state: _TableState, index_name: str, error: Exception) -> None:
    log.warning("index %s is left to moto's own query: %s", index_name, error)
    state.gsis.pop(index_name, None)
    state.broken.add(index_name)


def _refile(table: Any, state: _TableState, item_key: ItemKey) -> None:
    """Re-file one item in every index built so far (hold the state's lock)."""
    if state.items is not table.items:
        state.gsis.clear()  # the store was replaced: indexes are built again on demand
        state.items = table.items
        return
    for name, gsi in list(state.gsis.items()):
        try:
            gsi.refile(table, item_key)
        except _Unindexable as error:
            _give_up(state, name, error)


# --- writes -------------------------------------------------------------------------------


def _wrap_put_item(original: Any) -> Any:
    def put_item(table: Any, *args: Any, **kwargs: Any) -> Any:
        state = _state(table)
        with state.lock:
            item = original(table, *args, **kwargs)
            _refile(table, state, (item.hash_key, item.range_key))
        return item

    return put_item


def _wrap_delete_item(original: Any) -> Any:
    def delete_item(table: Any, hash_key: Any, range_key: Any) -> Any:
        state = _state(table)
        with state.lock:
            item = original(table, hash_key, range_key)
            if item is not None:
                _refile(table, state, (item.hash_key, item.range_key))
        return item

    return delete_item


def _wrap_update_item(original: Any) -> Any:
    def update_item(backend: Any, table_name: str, key: Any, *args: Any, **kwargs: Any) -> Any:
        table = backend.get_table(table_name)
        state = _state(table)
        with state.lock:
            try:
                item = original(backend, table_name, key, *args, **kwargs)
            except BaseException:
                # A failed update may still have created the item (moto writes a stub
                # before it evaluates the expression): file whatever is there now.
                item_key = _item_key(table, key)
                if item_key is not None:
                    _refile(table, state, item_key)
                raise
            _refile(table, state, (item.hash_key, item.range_key))
        return item

    return update_item


def _item_key(table: Any, key: Any) -> ItemKey | None:
    """The table.items key of a request's Key, as moto's update_item computes it."""
    if not isinstance(key, dict) or table.hash_key_attr not in key:
        return None
    range_key = None
    if table.range_key_attr in key:
        range_key = DynamoType(key[table.range_key_attr])
    return (DynamoType(key[table.hash_key_attr]), range_key)


# --- queries ------------------------------------------------------------------------------


def _wrap_query(original: Any) -> Any:
    def query(
        table: Any,
        hash_key: Any,
        range_comparison: str | None,
        range_objs: list[Any],
        limit: int | None,
        exclusive_start_key: dict[str, Any] | None,
        scan_index_forward: bool,
        projection_expressions: Any,
        index_name: str | None = None,
        consistent_read: bool = False,
        filter_expression: Any = None,
        hash_key_conditions: list[tuple[str, Any]] | None = None,
        range_key_conditions: list[tuple[str, str, list[Any]]] | None = None,
        **filter_kwargs: Any,
    ) -> tuple[list[Any], int, dict[str, Any] | None]:
        if index_name and not consistent_read and not filter_kwargs:
            state = _state(table)
            with state.lock:
                gsi = _gsi(table, state, index_name)
                page = None
                if gsi is not None:
                    try:
                        page = _page(
                            table, gsi, range_comparison, range_objs, limit,
                            exclusive_start_key, scan_index_forward,
                            hash_key_conditions or [], range_key_conditions or [],
                        )  # fmt: skip
                    except _Unindexable as error:
                        _give_up(state, index_name, error)
                if page is not None:
                    return _finish(
                        table, page, index_name, filter_expression, projection_expressions
                    )
        result: tuple[list[Any], int, dict[str, Any] | None] = original(
            table, hash_key, range_comparison, range_objs, limit, exclusive_start_key,
            scan_index_forward, projection_expressions, index_name, consistent_read,
            filter_expression, hash_key_conditions=hash_key_conditions,
            range_key_conditions=range_key_conditions, **filter_kwargs,
        )  # fmt: skip
        return result

    return query


@dataclass
class _Page:
    items: list[Any]
    last_evaluated_key: dict[str, Any] | None


def _page(
    table: Any,
    gsi: _Gsi,
    range_comparison: str | None,
    range_objs: list[Any],
    limit: int | None,
    start: dict[str, Any] | None,
    forward: bool,
    hash_conditions: list[tuple[str, Any]],
    range_conditions: list[tuple[str, str, list[Any]]],
) -> _Page | None:
    """The items of one page, as moto's query loop picks them; None for a query of a
    shape not handled here (moto's own code answers it)."""
    if len(hash_conditions) != 1 or hash_conditions[0][0] != gsi.hash_attr:
        return None
    if range_conditions and (
        len(range_conditions) != 1 or range_conditions[0][0] != gsi.range_attr
    ):
        return None
    if range_comparison and gsi.range_attr is None:
        return None  # moto raises for this; let it
    try:
        partition = partition_key(hash_conditions[0][1])
        keys = gsi.partitions.get(partition, [])
        low, high = _range_bounds(keys, range_comparison, [o.cast_value for o in range_objs])
        if start is not None:
            if any(a not in start for a in gsi.sort_attrs):
                return None
            if partition_key(DynamoType(start[gsi.hash_attr])) != partition:
                return None
            start_key = tuple(DynamoType(start[a]).cast_value for a in gsi.sort_attrs[1:])
            # moto skips the items that come before the start key, or are it.
            if forward:
                low = max(low, bisect.bisect_right(keys, start_key))
            else:
                high = min(high, bisect.bisect_left(keys, start_key))
    except TypeError:
        return None  # values of another type than the index's: moto's code decides
    refs = gsi.refs.get(partition, {})
    positions = range(low, high) if forward else range(high - 1, low - 1, -1)
    results: list[Any] = []
    result_size = 0
    for position in positions:
        item_key = refs.get(keys[position])
        item = None if item_key is None else _lookup(table, item_key)
        if item is None:
            raise _Unindexable(f"index {gsi.name}: an item vanished")
        # moto's loop, from here: limit and size first, then the range condition.
        if len(results) == limit or result_size + item.size() > RESULT_SIZE_LIMIT:
            return _Page(results, table._get_last_evaluated_key(results[-1], gsi.name))
        if not range_comparison or item.attrs[gsi.range_attr].compare(range_comparison, range_objs):
            results.append(item)
            result_size += item.size()
    # moto would go on to the partition's items outside the range condition (matching
    # none): with the page full, the first of them ends it with a LastEvaluatedKey.
    more = high < len(keys) if forward else low > 0
    if limit is not None and len(results) == limit and more:
        return _Page(results, table._get_last_evaluated_key(results[-1], gsi.name))
    return _Page(results, None)


def _range_bounds(
    keys: list[SortKey], comparison: str | None, values: list[Any]
) -> tuple[int, int]:
    """Positions [low, high) in ``keys`` that can hold items meeting the range condition.

    A superset is enough: each item in it is still checked with moto's own comparison.
    """

    def first(k: SortKey) -> Any:
        return k[0]

    low, high = 0, len(keys)
    if comparison in ("=", "EQ"):
        low = bisect.bisect_left(keys, values[0], key=first)
        high = bisect.bisect_right(keys, values[0], key=first)
    elif comparison in ("<", "LT"):
        high = bisect.bisect_left(keys, values[0], key=first)
    elif comparison in ("<=", "LE"):
        high = bisect.bisect_right(keys, values[0], key=first)
    elif comparison in (">", "GT"):
        low = bisect.bisect_right(keys, values[0], key=first)
    elif comparison in (">=", "GE"):
        low = bisect.bisect_left(keys, values[0], key=first)
    elif comparison == "BETWEEN":
        low = bisect.bisect_left(keys, values[0], key=first)
        high = bisect.bisect_right(keys, values[1], key=first)
    elif comparison == "BEGINS_WITH" and isinstance(values[0], str) and values[0]:
        prefix = values[0]
        low = bisect.bisect_left(keys, prefix, key=first)
        if ord(prefix[-1]) < 0x10FFFF:
            # Every string with the prefix sorts before its successor, none after it.
            successor = prefix[:-1] + chr(ord(prefix[-1]) + 1)
            high = bisect.bisect_left(keys, successor, key=first)
    return low, max(low, high)


def _finish(
    table: Any,
    page: _Page,
    index_name: str,
    filter_expression: Any,
    projection_expressions: Any,
) -> tuple[list[Any], int, dict[str, Any] | None]:
    # moto's Table.query, after its loop, unchanged.
    scanned_count = len(page.items)
    results = copy.deepcopy(page.items)
    index = table.get_index(index_name)
    results = [index.project(r) for r in results]
    if filter_expression is not None:
        results = [item for item in results if filter_expression.expr(item)]
    if projection_expressions:
        results = [r.project(projection_expressions) for r in results]
    return results, scanned_count, page.last_evaluated_key


# --- transactions ---------------------------------------------------------------------------


def _transact_write_items(backend: Any, transact_items: list[dict[str, Any]]) -> None:
    """moto's DynamoDBBackend.transact_write_items, with an undo log in place of copies
    of whole tables: the checks, the order of the writes and the errors are moto's."""
    if len(transact_items) > 100:
        raise TooManyTransactionsException()
    # The tables this transaction writes to, locked (in name order) for its duration.
    names: set[str] = set()
    for item in transact_items:
        for op in item.values():
            name = op.get("TableName") if isinstance(op, dict) else None
            if isinstance(name, str) and name in backend.tables:
                names.add(name)
    states = [_state(backend.tables[name]) for name in sorted(names)]
    for state in states:
        state.lock.acquire()
    try:
        _transact(backend, transact_items)
    finally:
        for state in reversed(states):
            state.lock.release()


def _transact(backend: Any, transact_items: list[dict[str, Any]]) -> None:
    undo: list[tuple[Any, ItemKey, Any]] = []  # (table, key, the item before, or None)
    streams = {
        name: len(table.stream_shard.items)
        for name, table in backend.tables.items()
        if table.stream_shard is not None
    }

    def remember(table_name: str, key: dict[str, Any]) -> None:
        table = backend.tables.get(table_name)
        item_key = None if table is None else _item_key(table, key)
        if item_key is not None:
            undo.append((table, item_key, copy.deepcopy(_lookup(table, item_key))))

    def roll_back() -> None:
        for table, item_key, before in reversed(undo):
            _restore(table, item_key, before)
        for name, length in streams.items():
            table = backend.tables.get(name)
            if table is not None and table.stream_shard is not None:
                del table.stream_shard.items[length:]

    target_items: set[tuple[str, str]] = set()

    def check_unicity(table_name: str, key: dict[str, Any]) -> None:
        item = (str(table_name), str(dict(sorted(key.items()))))
        if item in target_items:
            raise MultipleTransactionsException()
        target_items.add(item)

    errors: list[tuple[str, str, dict[str, Any]] | tuple[None, None, None]] = []
    for item in transact_items:
        original_item: dict[str, Any] | None = None
        if len(list(item.keys())) > 1:
            raise TransactWriteSingleOpException
        try:
            op_type, op = next(iter(item.items()))
            if op_type not in {"ConditionCheck", "Put", "Delete", "Update"}:
                raise ValueError("Unsupported transaction operation")
            table_name = op["TableName"]
            condition_expression = op.get("ConditionExpression")
            expression_attribute_names = op.get("ExpressionAttributeNames")
            expression_attribute_values = op.get("ExpressionAttributeValues")
            return_values_on_condition_check_failure = op.get("ReturnValuesOnConditionCheckFailure")
            if op_type == "Put":
                attrs = op["Item"]
                table = backend.get_table(table_name)
                key = {table.hash_key_attr: attrs[table.hash_key_attr]}
                if table.range_key_attr is not None:
                    key[table.range_key_attr] = attrs[table.range_key_attr]
            else:
                key = op["Key"]
            check_unicity(table_name, key)
            current = backend.get_item(table_name, key)
            if condition_expression is not None:
                condition_op = get_filter_expression(
                    condition_expression,
                    expression_attribute_names,
                    expression_attribute_values,
                )
                if not condition_op.expr(current):
                    if return_values_on_condition_check_failure == "ALL_OLD" and current:
                        original_item = current.to_json()["Attributes"]
                    raise ConditionalCheckFailed(item=original_item)
            if op_type != "ConditionCheck":
                remember(table_name, key)
            if op_type == "Put":
                backend.put_item(
                    table_name,
                    op["Item"],
                    condition_expression=condition_expression,
                    expression_attribute_names=expression_attribute_names,
                    expression_attribute_values=expression_attribute_values,
                )
            elif op_type == "Delete":
                backend.delete_item(
                    table_name,
                    key,
                    condition_expression=condition_expression,
                    expression_attribute_names=expression_attribute_names,
                    expression_attribute_values=expression_attribute_values,
                )
            elif op_type == "Update":
                backend.update_item(
                    table_name,
                    key,
                    update_expression=op["UpdateExpression"],
                    condition_expression=condition_expression,
                    expression_attribute_names=expression_attribute_names,
                    expression_attribute_values=expression_attribute_values,
                )
            errors.append((None, None, None))
        except (MultipleTransactionsException, MockValidationException):
            roll_back()
            raise
        except ConditionalCheckFailed as e:
            errors.append(("ConditionalCheckFailed", str(e.message), original_item))  # type: ignore[arg-type]
        except Exception as e:
            errors.append((type(e).__name__, str(e), original_item))  # type: ignore[arg-type]
    if any(code is not None for code, _, _ in errors):
        roll_back()
        raise TransactionCanceledException(errors)


def _restore(table: Any, item_key: ItemKey, before: Any) -> None:
    """Put back the item ``before`` (None: no item) under ``item_key``, without a stream
    record, and re-file it."""
    hash_key, range_key = item_key
    if table.range_key_attr:
        bucket = table.items.get(hash_key)
        if before is not None:
            table.items[hash_key][range_key] = before
        elif bucket is not None:
            bucket.pop(range_key, None)
            if not bucket:
                del table.items[hash_key]
    elif before is not None:
        table.items[hash_key] = before
    else:
        table.items.pop(hash_key, None)
    state = _state(table)
    with state.lock:
        _refile(table, state, item_key)


# --- items ----------------------------------------------------------------------------------

# The largest item, in moto's sizes (attribute names' and values' bytes), that moto accepts:
# the constant in moto's LimitedSizeDict.__setitem__ (above DynamoDB's 400 KB, "between
# 409 and 410KB" by moto's own measurement of AWS).
ITEM_SIZE_LIMIT = 405000


def _item_init(
    item: Any, hash_key: DynamoType, range_key: DynamoType | None, attrs: dict[str, Any]
) -> None:
    """Item.__init__: moto's item, its size checked with each attribute sized once."""
    item.hash_key = hash_key
    item.range_key = range_key
    item.attrs = LimitedSizeDict()
    size = 0
    for key, value in attrs.items():
        typed = DynamoType(value)
        size += bytesize(key) + typed.size()
        if size > ITEM_SIZE_LIMIT:
            raise ItemSizeTooLarge
        dict.__setitem__(item.attrs, key, typed)  # checked above: not moto's re-sizing


# --- applying -------------------------------------------------------------------------------


def apply(patches: Patches) -> None:
    patches.replace(Table, "query", _wrap_query(Table.query))
    patches.replace(Table, "put_item", _wrap_put_item(Table.put_item))
    patches.replace(Table, "delete_item", _wrap_delete_item(Table.delete_item))
    patches.replace(DynamoDBBackend, "update_item", _wrap_update_item(DynamoDBBackend.update_item))
    patches.replace(DynamoDBBackend, "transact_write_items", _transact_write_items)
    patches.replace(Item, "__init__", _item_init)


def forget() -> None:
    """Drop every index (after the patches are reverted: moto's code does not keep them)."""
    with _states_lock:
        _states.clear()
