"""infra.moto_speedups.dynamodb: DynamoDB semantics kept, on moto as released ("stock")
and with the speed-ups ("fast").

Every test runs on both flavours, so passing on both shows the maintained indexes answer
as moto's own query does; a randomized differential test compares whole transcripts of
writes and paginated queries.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from botocore.exceptions import ClientError
from moto.dynamodb.models.dynamo_type import DynamoType

from infra.moto_speedups.dynamodb import ITEM_SIZE_LIMIT
from tests.infra.moto_flavours import FLAVOURS, client, moto_as

REGION = "us-east-1"
TABLE = "jobs"
# Random transcripts in the suite (a few seconds each); raise it to search for differences
# (MOTO_SPEEDUPS_SEEDS=60 passed when this was written).
SEEDS = int(os.environ.get("MOTO_SPEEDUPS_SEEDS", "4"))

INDEXES = {
    # name: (hash attribute and type, range attribute and type or None, projection)
    "by-status": (("status", "S"), ("created_at", "S"), {"ProjectionType": "ALL"}),
    "by-score": (("team", "S"), ("score", "N"), {"ProjectionType": "KEYS_ONLY"}),
    "pending": (
        ("pending", "S"),
        ("pending_at", "N"),
        {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["expires_at"]},
    ),
    "by-kind": (("kind", "S"), None, {"ProjectionType": "ALL"}),
}


@pytest.fixture(params=FLAVOURS)
def flavour(request: pytest.FixtureRequest) -> Iterator[str]:
    with moto_as(request.param):
        yield request.param


def ddb() -> Any:
    return client("dynamodb")


def make_table(name: str = TABLE, range_key: bool = False) -> None:
    attributes = {"pk": "S"}
    schema = [{"AttributeName": "pk", "KeyType": "HASH"}]
    if range_key:
        attributes["sk"] = "N"
        schema.append({"AttributeName": "sk", "KeyType": "RANGE"})
    indexes = []
    for index_name, (hash_key, range_attr, projection) in INDEXES.items():
        key_schema = [{"AttributeName": hash_key[0], "KeyType": "HASH"}]
        attributes[hash_key[0]] = hash_key[1]
        if range_attr is not None:
            key_schema.append({"AttributeName": range_attr[0], "KeyType": "RANGE"})
            attributes[range_attr[0]] = range_attr[1]
        indexes.append({"IndexName": index_name, "KeySchema": key_schema, "Projection": projection})
    ddb().create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            {"AttributeName": k, "AttributeType": t} for k, t in attributes.items()
        ],
        KeySchema=schema,
        GlobalSecondaryIndexes=indexes,
    )


def item(pk: str, **attrs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"pk": {"S": pk}}
    for name, value in attrs.items():
        if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
            out[name] = {"N": str(value)}
        else:
            out[name] = {"S": str(value)}
    return out


def put(**attrs: Any) -> None:
    pk = attrs.pop("pk")
    ddb().put_item(TableName=TABLE, Item=item(pk, **attrs))


def query(index: str, hash_value: Any, condition: str = "", values: dict[str, Any] | None = None,
          **kwargs: Any) -> dict[str, Any]:  # fmt: skip
    hash_attr, range_key, _ = INDEXES[index]
    names = {"#h": hash_attr[0]}
    expression = "#h = :h"
    if condition:
        assert range_key is not None
        names["#r"] = range_key[0]
        expression += " AND " + condition
    attribute_values = {":h": {hash_attr[1]: str(hash_value)}, **(values or {})}
    if "FilterExpression" in kwargs:
        names.update(kwargs.pop("names", {}))
    response: dict[str, Any] = ddb().query(
        TableName=TABLE,
        IndexName=index,
        KeyConditionExpression=expression,
        ExpressionAttributeNames=names,
        ExpressionAttributeValues=attribute_values,
        **kwargs,
    )
    return response


def pks(response: dict[str, Any]) -> list[str]:
    return [i["pk"]["S"] for i in response["Items"]]


def every_page(index: str, hash_value: Any, limit: int, **kwargs: Any) -> list[dict[str, Any]]:
    pages = []
    start = None
    while True:
        extra = dict(kwargs)
        if start is not None:
            extra["ExclusiveStartKey"] = start
        page = query(index, hash_value, Limit=limit, **extra)
        pages.append(page)
        start = page.get("LastEvaluatedKey")
        if start is None:
            return pages
        assert len(pages) < 100


# --- order and pages ----------------------------------------------------------------------


def test_an_index_lists_by_range_key_then_table_key_in_both_directions(flavour: str) -> None:
    make_table()
    for pk, created in [("b", "2026-01-02"), ("a", "2026-01-02"), ("c", "2026-01-01"),
                        ("d", "2026-01-03"), ("e", "2026-01-01")]:  # fmt: skip
        put(pk=pk, status="queued", created_at=created)
    put(pk="x", status="running", created_at="2026-01-02")
    assert pks(query("by-status", "queued")) == ["c", "e", "a", "b", "d"]
    assert pks(query("by-status", "queued", ScanIndexForward=False)) == ["d", "b", "a", "e", "c"]
    assert pks(query("by-status", "running")) == ["x"]
    assert pks(query("by-status", "nothing")) == []


@pytest.mark.parametrize("forward", [True, False])
@pytest.mark.parametrize("limit", [1, 3, 5, 7])
def test_pages_visit_every_item_once_in_order(flavour: str, forward: bool, limit: int) -> None:
    make_table()
    for n in range(10):
        put(pk=f"j{n}", status="queued", created_at=f"2026-01-{n % 4:02d}")
    everything = pks(query("by-status", "queued", ScanIndexForward=forward))
    assert len(everything) == 10
    pages = every_page("by-status", "queued", limit, ScanIndexForward=forward)
    assert [pk for page in pages for pk in pks(page)] == everything
    assert all(len(page["Items"]) == limit for page in pages[:-1])
    # moto gives a LastEvaluatedKey only when another item follows the page.
    assert len(pages) == -(-10 // limit)
    assert set(pages[0].get("LastEvaluatedKey", {})) <= {"pk", "status", "created_at"}


@pytest.mark.parametrize("forward", [True, False])
def test_range_key_conditions(flavour: str, forward: bool) -> None:
    make_table()
    for n, score in enumerate([5, 1, 3, 3, 10, -2, 7.5]):
        put(pk=f"s{n}", team="red", score=score)
    put(pk="other", team="blue", score=3)

    def scores(condition: str, **values: Any) -> list[str]:
        typed = {f":{k}": {"N": str(v)} for k, v in values.items()}
        response = query("by-score", "red", condition, typed, ScanIndexForward=forward)
        got = pks(response)
        return got if forward else got[::-1]

    assert scores("#r = :v", v=3) == ["s2", "s3"]
    assert scores("#r < :v", v=3) == ["s5", "s1"]
    assert scores("#r <= :v", v=3) == ["s5", "s1", "s2", "s3"]
    assert scores("#r > :v", v=5) == ["s6", "s4"]
    assert scores("#r >= :v", v=5) == ["s0", "s6", "s4"]
    assert scores("#r BETWEEN :a AND :b", a=1, b=5) == ["s1", "s2", "s3", "s0"]
    assert scores("#r BETWEEN :a AND :b", a=11, b=20) == []


def test_begins_with_on_a_string_range_key(flavour: str) -> None:
    make_table()
    for pk, created in [("a", "2026-01-01T10"), ("b", "2026-01-02T09"), ("c", "2026-01-01T23"),
                        ("d", "2026-02-01T00"), ("e", "2025-12-31T23")]:  # fmt: skip
        put(pk=pk, status="queued", created_at=created)
    response = query("by-status", "queued", "begins_with(#r, :p)", {":p": {"S": "2026-01-01"}})
    assert pks(response) == ["a", "c"]
    response = query(
        "by-status", "queued", "begins_with(#r, :p)", {":p": {"S": "2026-01"}}, Limit=2
    )
    assert pks(response) == ["a", "c"]
    assert "LastEvaluatedKey" in response


def test_a_range_condition_with_a_limit_pages_through_its_matches(flavour: str) -> None:
    make_table()
    for n in range(12):
        put(pk=f"p{n:02d}", pending="p#0", pending_at=n * 10)
    values = {":lo": {"N": "25"}, ":hi": {"N": "95"}}
    start = None
    seen: list[str] = []
    pages = 0
    while True:
        extra = {"ExclusiveStartKey": start} if start else {}
        page = query("pending", "p#0", "#r BETWEEN :lo AND :hi", values, Limit=3, **extra)
        seen += pks(page)
        pages += 1
        start = page.get("LastEvaluatedKey")
        if not start:
            break
    assert seen == [f"p{n:02d}" for n in range(3, 10)]
    assert pages == 3  # 3 + 3 + 1: the last page is full-less, so no key after it


def test_a_filter_applies_after_the_limit(flavour: str) -> None:
    make_table()
    for n in range(6):
        put(pk=f"j{n}", status="queued", created_at=f"2026-01-0{n}", expires_at=100 + n)
    response = query(
        "by-status",
        "queued",
        Limit=4,
        values={":now": {"N": "102"}},
        FilterExpression="#e > :now",
        names={"#e": "expires_at"},
    )
    assert pks(response) == ["j3"]
    assert (response["Count"], response["ScannedCount"]) == (1, 4)
    assert response["LastEvaluatedKey"]["pk"] == {"S": "j3"}


def test_ttl_expired_items_are_still_returned_as_moto_returns_them(flavour: str) -> None:
    make_table()
    ddb().update_time_to_live(
        TableName=TABLE, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"}
    )
    put(pk="old", status="queued", created_at="2020-01-01", expires_at=1)
    put(pk="new", status="queued", created_at="2026-01-01", expires_at=4_000_000_000)
    # moto never deletes expired items (DynamoDB does, eventually): readers filter them.
    assert pks(query("by-status", "queued")) == ["old", "new"]
    response = query(
        "by-status",
        "queued",
        values={":now": {"N": "1800000000"}},
        FilterExpression="attribute_not_exists(#e) OR #e > :now",
        names={"#e": "expires_at"},
    )
    assert pks(response) == ["new"]


# --- keeping up with writes -----------------------------------------------------------------


def update(pk: str, expression: str, values: dict[str, Any] | None = None) -> None:
    kwargs: dict[str, Any] = {"TableName": TABLE, "Key": {"pk": {"S": pk}}}
    if "#s" in expression:
        kwargs["ExpressionAttributeNames"] = {"#s": "status"}
    if values:
        kwargs["ExpressionAttributeValues"] = values
    ddb().update_item(UpdateExpression=expression, **kwargs)


def test_updates_move_add_and_remove_items_in_the_indexes(flavour: str) -> None:
    make_table()
    put(pk="a", status="queued", created_at="2026-01-01", pending="p#1", pending_at=5)
    put(pk="b", status="queued", created_at="2026-01-02")
    assert pks(query("pending", "p#1")) == ["a"]

    update("a", "SET #s = :s REMOVE pending, pending_at", {":s": {"S": "running"}})
    assert pks(query("by-status", "queued")) == ["b"]
    assert pks(query("by-status", "running")) == ["a"]
    assert pks(query("pending", "p#1")) == []

    update("b", "SET pending = :p, pending_at = :t", {":p": {"S": "p#1"}, ":t": {"N": "1"}})
    update("b", "SET created_at = :c", {":c": {"S": "2025-01-01"}})
    assert pks(query("pending", "p#1")) == ["b"]
    put(pk="c", status="queued", created_at="2026-01-05")
    assert pks(query("by-status", "queued")) == ["b", "c"]
    ddb().delete_item(TableName=TABLE, Key={"pk": {"S": "b"}})
    assert pks(query("by-status", "queued")) == ["c"]
    assert pks(query("pending", "p#1")) == []
    # An update of a missing item creates it (moto and DynamoDB alike).
    update("new", "SET #s = :s, created_at = :c", {":s": {"S": "queued"}, ":c": {"S": "2027"}})
    assert pks(query("by-status", "queued")) == ["c", "new"]
    # Putting an item again replaces it in every index.
    put(pk="c", status="running", created_at="2026-01-05")
    assert pks(query("by-status", "queued")) == ["new"]
    assert pks(query("by-status", "running")) == ["a", "c"]


def test_failed_conditional_writes_change_no_index(flavour: str) -> None:
    make_table()
    put(pk="a", status="queued", created_at="2026-01-01")
    with pytest.raises(ClientError) as error:
        ddb().put_item(
            TableName=TABLE,
            Item=item("a", status="running", created_at="2026-01-01"),
            ConditionExpression="attribute_not_exists(pk)",
        )
    assert error.value.response["Error"]["Code"] == "ConditionalCheckFailedException"
    with pytest.raises(ClientError):
        ddb().update_item(
            TableName=TABLE,
            Key={"pk": {"S": "a"}},
            UpdateExpression="SET #s = :r",
            ConditionExpression="#s = :r",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={":r": {"S": "running"}},
        )
    with pytest.raises(ClientError):
        ddb().delete_item(
            TableName=TABLE, Key={"pk": {"S": "a"}}, ConditionExpression="attribute_not_exists(pk)"
        )
    assert pks(query("by-status", "queued")) == ["a"]
    assert pks(query("by-status", "running")) == []


def test_projections_of_each_index(flavour: str) -> None:
    make_table()
    put(pk="a", status="queued", created_at="2026-01-01", team="red", score=1, kind="k",
        pending="p#0", pending_at=1, expires_at=9, note="x")  # fmt: skip
    assert query("by-score", "red")["Items"] == [
        {"pk": {"S": "a"}, "team": {"S": "red"}, "score": {"N": "1"}}
    ]
    assert query("pending", "p#0")["Items"] == [
        {"pk": {"S": "a"}, "pending": {"S": "p#0"}, "pending_at": {"N": "1"},
         "expires_at": {"N": "9"}}
    ]  # fmt: skip
    assert query("by-kind", "k")["Items"][0]["note"] == {"S": "x"}


def test_an_index_without_a_range_key_orders_by_table_key(flavour: str) -> None:
    make_table()
    for pk in ["c", "a", "b"]:
        put(pk=pk, kind="k")
    assert pks(query("by-kind", "k")) == ["a", "b", "c"]
    pages = every_page("by-kind", "k", 2)
    assert [pk for page in pages for pk in pks(page)] == ["a", "b", "c"]


def test_an_index_of_a_table_with_a_range_key(flavour: str) -> None:
    make_table(range_key=True)
    for pk, sk in [("a", 2), ("a", 1), ("b", 1)]:
        ddb().put_item(
            TableName=TABLE,
            Item={**item(pk, status="queued", created_at="2026"), "sk": {"N": str(sk)}},
        )
    response = query("by-status", "queued")
    assert [(i["pk"]["S"], i["sk"]["N"]) for i in response["Items"]] == [
        ("a", "1"), ("a", "2"), ("b", "1")
    ]  # fmt: skip
    ddb().delete_item(TableName=TABLE, Key={"pk": {"S": "a"}, "sk": {"N": "1"}})
    response = query("by-status", "queued", Limit=1)
    assert [(i["pk"]["S"], i["sk"]["N"]) for i in response["Items"]] == [("a", "2")]
    assert response["LastEvaluatedKey"] == {
        "pk": {"S": "a"}, "sk": {"N": "2"}, "status": {"S": "queued"}, "created_at": {"S": "2026"}
    }  # fmt: skip


def test_an_index_added_to_a_table_with_items(flavour: str) -> None:
    make_table()
    put(pk="a", status="queued", created_at="2026", colour="blue")
    put(pk="b", status="queued", created_at="2026", colour="blue")
    assert pks(query("by-status", "queued")) == ["a", "b"]
    ddb().update_table(
        TableName=TABLE,
        AttributeDefinitions=[{"AttributeName": "colour", "AttributeType": "S"}],
        GlobalSecondaryIndexUpdates=[
            {
                "Create": {
                    "IndexName": "by-colour",
                    "KeySchema": [{"AttributeName": "colour", "KeyType": "HASH"}],
                    "Projection": {"ProjectionType": "KEYS_ONLY"},
                }
            },
            {"Delete": {"IndexName": "by-status"}},
        ],
    )
    response = ddb().query(
        TableName=TABLE,
        IndexName="by-colour",
        KeyConditionExpression="colour = :c",
        ExpressionAttributeValues={":c": {"S": "blue"}},
    )
    assert pks(response) == ["a", "b"]
    with pytest.raises(ClientError):
        query("by-status", "queued")


def test_errors_moto_raises_are_kept(flavour: str) -> None:
    make_table()
    with pytest.raises(ClientError) as error:
        query("by-status", "queued", ConsistentRead=True)
    assert error.value.response["Error"]["Code"] == "ValidationException"
    with pytest.raises(ClientError):
        ddb().query(
            TableName=TABLE,
            IndexName="no-such-index",
            KeyConditionExpression="pk = :p",
            ExpressionAttributeValues={":p": {"S": "a"}},
        )


# --- transactions and batches -------------------------------------------------------------


def test_a_transaction_writes_all_or_nothing(flavour: str) -> None:
    make_table()
    put(pk="a", status="queued", created_at="2026-01-01")
    put(pk="b", status="queued", created_at="2026-01-02")
    ddb().transact_write_items(
        TransactItems=[
            {
                "Put": {
                    "TableName": TABLE,
                    "Item": item("c", status="queued", created_at="2026-01-03"),
                }
            },
            {"Delete": {"TableName": TABLE, "Key": {"pk": {"S": "a"}}}},
        ]
    )
    assert pks(query("by-status", "queued")) == ["b", "c"]

    with pytest.raises(ClientError) as error:
        ddb().transact_write_items(
            TransactItems=[
                {
                    "Put": {
                        "TableName": TABLE,
                        "Item": item("d", status="queued", created_at="2026-01-04"),
                    }
                },
                {"Delete": {"TableName": TABLE, "Key": {"pk": {"S": "b"}}}},
                {
                    "Update": {
                        "TableName": TABLE,
                        "Key": {"pk": {"S": "c"}},
                        "UpdateExpression": "SET #s = :r",
                        "ExpressionAttributeNames": {"#s": "status"},
                        "ExpressionAttributeValues": {":r": {"S": "running"}},
                    }
                },
                {
                    "ConditionCheck": {
                        "TableName": TABLE,
                        "Key": {"pk": {"S": "zzz"}},
                        "ConditionExpression": "attribute_exists(pk)",
                    }
                },
            ]
        )
    assert error.value.response["Error"]["Code"] == "TransactionCanceledException"
    reasons = [r["Code"] for r in error.value.response["CancellationReasons"]]
    assert reasons == ["None", "None", "None", "ConditionalCheckFailed"]
    assert pks(query("by-status", "queued")) == ["b", "c"]
    assert pks(query("by-status", "running")) == []
    assert "Item" not in ddb().get_item(TableName=TABLE, Key={"pk": {"S": "d"}})


def test_a_transaction_may_not_touch_an_item_twice(flavour: str) -> None:
    make_table()
    with pytest.raises(ClientError) as error:
        ddb().transact_write_items(
            TransactItems=[
                {"Put": {"TableName": TABLE, "Item": item("a", status="queued", created_at="1")}},
                {"Delete": {"TableName": TABLE, "Key": {"pk": {"S": "a"}}}},
            ]
        )
    assert error.value.response["Error"]["Code"] == "ValidationException"
    assert pks(query("by-status", "queued")) == []


def test_batch_write_and_batch_get(flavour: str) -> None:
    make_table()
    ddb().batch_write_item(
        RequestItems={
            TABLE: [
                {"PutRequest": {"Item": item(f"j{n}", status="queued", created_at=f"{n:03d}")}}
                for n in range(25)
            ]
        }
    )
    ddb().batch_write_item(
        RequestItems={
            TABLE: [{"DeleteRequest": {"Key": {"pk": {"S": f"j{n}"}}}} for n in range(0, 25, 2)]
        }
    )
    assert pks(query("by-status", "queued")) == [f"j{n}" for n in range(1, 25, 2)]
    got = ddb().batch_get_item(
        RequestItems={TABLE: {"Keys": [{"pk": {"S": f"j{n}"}} for n in range(5)]}}
    )
    assert sorted(i["pk"]["S"] for i in got["Responses"][TABLE]) == ["j1", "j3"]


# --- item size --------------------------------------------------------------------------


def sized_item(pk: str, size: int, names: int = 1) -> dict[str, Any]:
    """An item of exactly ``size`` bytes in moto's count: its key, then ``names`` string
    attributes, the last one padded."""
    out = item(pk)
    used = len("pk") + len(pk)
    for n in range(names):
        name = f"a{n:03d}"
        value = "x" if n < names - 1 else "x" * (size - used - len(name))
        out[name] = {"S": value}
        used += len(name) + len(value)
    assert used == size
    return out


@pytest.mark.parametrize("names", [1, 30])
def test_an_item_at_the_size_limit_is_written_and_one_byte_more_is_refused(
    flavour: str, names: int
) -> None:
    make_table()
    ddb().put_item(TableName=TABLE, Item=sized_item("at", ITEM_SIZE_LIMIT, names))
    with pytest.raises(ClientError) as error:
        ddb().put_item(TableName=TABLE, Item=sized_item("over", ITEM_SIZE_LIMIT + 1, names))
    assert error.value.response["Error"]["Code"] == "ValidationException"
    assert "Item size has exceeded" in error.value.response["Error"]["Message"]
    with pytest.raises(ClientError):
        ddb().batch_write_item(
            RequestItems={
                TABLE: [{"PutRequest": {"Item": sized_item("batched", ITEM_SIZE_LIMIT + 1, names)}}]
            }
        )
    got = ddb().scan(TableName=TABLE)["Items"]
    assert [i["pk"]["S"] for i in got] == ["at"]
    assert got[0] == sized_item("at", ITEM_SIZE_LIMIT, names)


def test_an_attribute_past_the_limit_is_refused_wherever_it_is_in_the_item(
    flavour: str,
) -> None:
    make_table()
    big = sized_item("big", ITEM_SIZE_LIMIT - 100)
    big["then"] = {"S": "y" * 200}  # crosses the limit; small attributes follow it
    big.update({f"z{n}": {"S": "z"} for n in range(10)})
    with pytest.raises(ClientError) as error:
        ddb().put_item(TableName=TABLE, Item=big)
    assert "Item size has exceeded" in error.value.response["Error"]["Message"]
    assert ddb().scan(TableName=TABLE)["Items"] == []


def test_an_items_attributes_are_sized_once_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """moto checks the item limit attribute by attribute, sizing every attribute already
    added each time: an item of n attributes costs n²/2 sizings (a job record, about
    twenty attributes: about a third of a BatchWriteItem's time). The speed-ups size each once."""
    sized = 0
    original = DynamoType.size

    def counting(value: DynamoType) -> int:
        nonlocal sized
        sized += 1
        return original(value)

    monkeypatch.setattr(DynamoType, "size", counting)
    with moto_as("fast"):
        make_table()
        attributes = 100
        ddb().put_item(TableName=TABLE, Item=sized_item("a", 1000, attributes))
    # Each attribute once, and moto's key-size checks; not the 5,000 of n²/2.
    assert attributes <= sized <= 2 * attributes


# --- whole transcripts, stock against fast ------------------------------------------------


def _transcript(seed: int) -> list[Any]:
    """Random writes (put, update, delete, batch, transactions that succeed or fail) and,
    between them, paginated queries of random shape; everything the table answered."""
    rng = random.Random(seed)
    make_table()
    transcript: list[Any] = []
    statuses = ["queued", "running", "done"]

    def random_item(pk: str) -> dict[str, Any]:
        attrs: dict[str, Any] = {
            "status": rng.choice(statuses),
            "created_at": f"2026-01-{rng.randrange(1, 6):02d}",
            "team": rng.choice(["red", "blue"]),
            "score": rng.choice([1, 2, 2.5, 3, -1, 10]),
        }
        if rng.random() < 0.5:
            attrs.update(pending=f"p#{rng.randrange(2)}", pending_at=rng.randrange(50))
        if rng.random() < 0.5:
            attrs["kind"] = rng.choice(["a", "b"])
        if rng.random() < 0.5:
            attrs["expires_at"] = rng.randrange(200)
        return item(pk, **attrs)

    def pk() -> dict[str, Any]:
        return {"pk": {"S": f"k{rng.randrange(40)}"}}

    def attempt(name: str, call: Any, **kwargs: Any) -> None:
        try:
            call(**kwargs)
            transcript.append((name, "ok"))
        except ClientError as error:
            transcript.append((name, error.response["Error"]["Code"]))

    for _ in range(160):
        op = rng.choices(
            ["put", "update", "delete", "batch", "transact", "query"], [5, 5, 2, 1, 2, 5]
        )[0]
        if op == "put":
            new = random_item(pk()["pk"]["S"])
            condition = rng.choice([None, "attribute_not_exists(pk)"])
            attempt(op, ddb().put_item, TableName=TABLE, Item=new,
                    **({"ConditionExpression": condition} if condition else {}))  # fmt: skip
        elif op == "update":
            expression, values = rng.choice(
                [
                    ("SET #s = :v", {":v": {"S": rng.choice(statuses)}}),
                    (
                        "SET pending = :v, pending_at = :t",
                        {":v": {"S": "p#0"}, ":t": {"N": str(rng.randrange(50))}},
                    ),
                    ("REMOVE pending, pending_at", {}),
                    ("SET created_at = :v", {":v": {"S": f"2026-01-{rng.randrange(1, 6):02d}"}}),
                    ("SET score = score + :v", {":v": {"N": "1"}}),
                ]
            )
            kwargs: dict[str, Any] = {
                "TableName": TABLE, "Key": pk(), "UpdateExpression": expression
            }  # fmt: skip
            if "#s" in expression:
                kwargs["ExpressionAttributeNames"] = {"#s": "status"}
            if values:
                kwargs["ExpressionAttributeValues"] = values
            if rng.random() < 0.5:
                kwargs["ConditionExpression"] = "attribute_exists(pk)"
            attempt(op, ddb().update_item, **kwargs)
        elif op == "delete":
            attempt(op, ddb().delete_item, TableName=TABLE, Key=pk())
        elif op == "batch":
            keys = sorted({pk()["pk"]["S"] for _ in range(rng.randint(1, 8))})
            requests = [
                {"PutRequest": {"Item": random_item(k)}} if rng.random() < 0.7
                else {"DeleteRequest": {"Key": {"pk": {"S": k}}}}
                for k in keys
            ]  # fmt: skip
            attempt(op, ddb().batch_write_item, RequestItems={TABLE: requests})
        elif op == "transact":
            keys = sorted({pk()["pk"]["S"] for _ in range(rng.randint(1, 4))})
            items: list[dict[str, Any]] = []
            for k in keys:
                kind = rng.choice(["Put", "Delete", "Check"])
                if kind == "Put":
                    items.append({"Put": {"TableName": TABLE, "Item": random_item(k)}})
                elif kind == "Delete":
                    items.append({"Delete": {"TableName": TABLE, "Key": {"pk": {"S": k}}}})
                else:
                    check = rng.choice(["attribute_exists(pk)", "attribute_not_exists(pk)"])
                    items.append(
                        {"ConditionCheck": {"TableName": TABLE, "Key": {"pk": {"S": k}},
                                            "ConditionExpression": check}}
                    )  # fmt: skip
            attempt(op, ddb().transact_write_items, TransactItems=items)
        else:
            index = rng.choice(list(INDEXES))
            hash_value = {"by-status": statuses, "by-score": ["red", "blue"],
                          "pending": ["p#0", "p#1"], "by-kind": ["a", "b"]}[index]  # fmt: skip
            condition, values = "", {}
            if INDEXES[index][1] is not None and rng.random() < 0.5:
                if index == "by-status":
                    low, high = sorted(f"2026-01-{rng.randrange(1, 6):02d}" for _ in range(2))
                    typ = "S"
                else:
                    low, high = sorted(str(rng.randrange(-1, 50)) for _ in range(2))
                    low, high = sorted((low, high), key=Decimal)
                    typ = "N"
                condition, values = rng.choice(
                    [
                        ("#r = :a", {":a": {typ: low}}),
                        ("#r < :a", {":a": {typ: low}}),
                        ("#r >= :a", {":a": {typ: low}}),
                        ("#r BETWEEN :a AND :b", {":a": {typ: low}, ":b": {typ: high}}),
                    ]
                )
            kwargs = {"ScanIndexForward": rng.random() < 0.5}
            if rng.random() < 0.4:
                kwargs["FilterExpression"] = "attribute_not_exists(#e) OR #e > :now"
                kwargs["names"] = {"#e": "expires_at"}
                values = {**values, ":now": {"N": "100"}}
            limit = rng.choice([1, 2, 5, 50])
            partition = rng.choice(hash_value)
            start = None
            for _ in range(5):  # pages: enough to cross partitions' ends and starts
                extra = dict(kwargs)
                if start is not None:
                    extra["ExclusiveStartKey"] = start
                page = query(index, partition, condition, values, Limit=limit, **extra)
                transcript.append(("page", index, condition, page["Items"], page["Count"],
                                   page["ScannedCount"], page.get("LastEvaluatedKey")))  # fmt: skip
                start = page.get("LastEvaluatedKey")
                if start is None:
                    break
    return transcript


@pytest.mark.parametrize("seed", range(SEEDS))
def test_random_writes_and_queries_get_the_same_answers_from_stock_and_fast_moto(
    seed: int,
) -> None:
    transcripts = {}
    for flavour in FLAVOURS:
        with moto_as(flavour):
            transcripts[flavour] = _transcript(seed)
    stock, fast = transcripts["stock"], transcripts["fast"]
    assert sum(1 for entry in stock if entry[0] == "page") > 20
    for i, (expected, got) in enumerate(zip(stock, fast, strict=True)):
        assert got == expected, f"step {i}"
