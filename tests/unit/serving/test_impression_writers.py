"""The Firehose writer packs many impression lines into each record, within Firehose's limits,
and gives back exactly the lines of records Firehose refused."""

from __future__ import annotations

from typing import Any

from recpipe.adapters.impressions import (
    FIREHOSE_MAX_BYTES,
    FIREHOSE_MAX_RECORDS,
    FirehoseImpressionWriter,
    pack,
)


def lines(n: int, size: int = 100) -> list[bytes]:
    return [(f"{i:06d}".ljust(size - 1, "x") + "\n").encode() for i in range(n)]


class Firehose:
    """Records every PutRecordBatch; refuses the records whose index is in `refuse` (once)."""

    def __init__(self, refuse: set[int] | None = None) -> None:
        self.calls: list[list[bytes]] = []
        self.refuse = set(refuse or ())

    def put_record_batch(self, DeliveryStreamName: str, Records: list[dict[str, bytes]]) -> dict[str, Any]:
        assert DeliveryStreamName == "impressions"
        self.calls.append([r["Data"] for r in Records])
        refused, self.refuse = self.refuse, set()
        results = [
            {"ErrorCode": "ServiceUnavailableException"} if i in refused else {} for i in range(len(Records))
        ]
        return {"FailedPutCount": len(refused), "RequestResponses": results}


def test_lines_are_packed_into_few_records_and_arrive_whole_and_in_order() -> None:
    firehose = Firehose()
    sent = lines(2500)
    assert FirehoseImpressionWriter(firehose, "impressions", max_record_bytes=100_000).write(sent) == []
    assert len(firehose.calls) == 1, "one PutRecordBatch for 250 kB"
    records = firehose.calls[0]
    assert len(records) == 3 and all(len(r) <= 100_000 for r in records)
    assert b"".join(records) == b"".join(sent), "concatenated by Firehose: the same lines"


def test_each_call_stays_within_the_put_record_batch_limits() -> None:
    firehose = Firehose()
    writer = FirehoseImpressionWriter(firehose, "impressions", max_record_bytes=1_000)
    assert writer.write(lines(12_000)) == []  # 1.2 MB in 1,200 records of 10 lines
    assert [len(c) for c in firehose.calls] == [FIREHOSE_MAX_RECORDS, FIREHOSE_MAX_RECORDS, 200]
    assert all(sum(map(len, c)) <= FIREHOSE_MAX_BYTES for c in firehose.calls)
    assert writer.calls == 3 and writer.records_sent == 1_200


def test_a_refused_record_is_retried_and_only_its_lines_come_back_if_it_keeps_failing() -> None:
    retried = Firehose(refuse={1})
    assert FirehoseImpressionWriter(retried, "impressions", max_record_bytes=1_000).write(lines(30)) == []
    assert [len(c) for c in retried.calls] == [3, 1], "the second call re-sends the refused record only"

    class Down(Firehose):
        def put_record_batch(
            self, DeliveryStreamName: str, Records: list[dict[str, bytes]]
        ) -> dict[str, Any]:
            self.refuse = {0} if len(Records) == 1 else {1}
            return super().put_record_batch(DeliveryStreamName, Records)

    sent = lines(30)
    failed = FirehoseImpressionWriter(Down(), "impressions", max_record_bytes=1_000).write(sent)
    assert [line for line, _ in failed] == sent[10:20]
    assert all("ServiceUnavailableException" in why for _, why in failed)


def test_packing_keeps_lines_whole_and_a_line_over_the_limit_alone() -> None:
    assert pack([b"a" * 60, b"b" * 60, b"c" * 200, b"d" * 10], max_bytes=100) == [
        [b"a" * 60], [b"b" * 60], [b"c" * 200], [b"d" * 10],
    ]  # fmt: skip
    assert pack([b"a" * 40, b"b" * 60, b"c" * 1], max_bytes=100) == [[b"a" * 40, b"b" * 60], [b"c"]]
