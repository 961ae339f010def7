"""Two pipelines in one consumer group, each on its own folder, as two machines would run them."""

from __future__ import annotations

import os

from tests.kafka.pipeline_process import PipelineProcess, status_partitions
from tests.kafka.source_process import numbered
from tests.kafka.test_kafka_pipeline import FUNCTIONS, Reader, all_of, check_content, name
from tests.support.supervised import wait_for


def test_two_pipelines_split_the_partitions_and_one_killed_then_started_again_loses_nothing(kafka, tmp_path):
    source, target, group = kafka.topic(partitions=4), kafka.topic(partitions=1), name("group")
    reader = Reader(kafka, target)
    folders = [str(tmp_path / "machine-a"), str(tmp_path / "machine-b")]

    def start(folder: str) -> PipelineProcess:
        return PipelineProcess(kafka.bootstrap, source, target, group, f"{FUNCTIONS}:slow_tag", "--folder", folder,
                               log_dir=str(tmp_path), workers=2)

    a, b = start(folders[0]), start(folders[1])
    again = None
    try:
        a.wait_for_children(["source-0", "sink-0"])
        b.wait_for_children(["source-0", "sink-0"])
        # Kafka spreads the 4 partitions over the two pipelines' sources.
        split = wait_for(lambda: (pa := status_partitions(folders[0])) and (pb := status_partitions(folders[1]))
                         and len(pa) + len(pb) == 4 and (pa, pb), 60, "the partitions split between the two")
        assert sorted(split[0] + split[1]) == [0, 1, 2, 3] and split[0] and split[1]
        kafka.produce(source, numbered(0, 2000))
        reader.until(all_of(2000), what="the first 2000 through both")
        kafka.produce(source, numbered(2000, 4000))
        reader.until(lambda records: len(records) >= 2300, what="some of the next 2000")
        a.kill_all()  # machine A dies: its partitions move to B; what its folder holds waits for it
        wait_for(lambda: status_partitions(folders[1]) == [0, 1, 2, 3], 60, "B holds every partition")
        again = start(folders[0])  # machine A comes back on its disk: its folder's batches are delivered
        reader.until(all_of(4000), what="all 4000 after the kill and the restart")
        for folder in folders:
            wait_for(lambda: not [n for sub in ("in", "out") for n in os.listdir(os.path.join(folder, sub))
                                  if n.endswith(".db")], 60, f"{folder} drained")
        assert again.terminate() == 0, again.log()
        assert b.terminate() == 0, b.log()
    finally:
        for pipeline in (a, b, again):
            if pipeline is not None:
                pipeline.close()
        reader.close()
    check_content(reader.records)
    assert not [pid for p in (b, again) for pid in p.left_running()]
