"""Two `phim serve` processes on one PostgreSQL database and one S3 bucket/prefix: what one
stores, the other finds (QIDO-RS) and serves byte for byte (WADO-RS)."""

from __future__ import annotations

from phim_helpers import (
    Instance,
    assert_instance_bytes,
    instance_path,
    jvalue,
    metadata,
    qido,
    stow,
    uid_for,
)


def test_store_on_one_read_from_the_other(phim_factory):
    store = phim_factory.prod_store()
    a = phim_factory.start("pg_s3", store=store, name="pg_s3-a")
    b = phim_factory.start("pg_s3", store=store, name="pg_s3-b")

    study = uid_for("two-servers", "study")
    series = uid_for("two-servers", "series")
    insts = [Instance.make(f"two-servers/{i}", study_uid=study, series_uid=series, instance_number=i + 1,
                           patient_id="PID-TWO") for i in range(3)]
    res = stow(a, [i.data for i in insts])
    assert res.status == 200, res.describe()

    hits = qido(b, "/dicomweb/studies", {"StudyInstanceUID": study})
    assert [jvalue(h, "0020000D") for h in hits] == [study]
    hits = qido(b, "/dicomweb/studies", {"PatientID": "PID-TWO"})
    assert [jvalue(h, "0020000D") for h in hits] == [study]
    hits = qido(b, f"/dicomweb/studies/{study}/series/{series}/instances")
    assert sorted(jvalue(h, "00080018") for h in hits) == sorted(i.sop for i in insts)
    for inst in insts:
        assert_instance_bytes(b, inst.study, inst.series, inst.sop, inst.data)
        md = metadata(b, instance_path(inst.study, inst.series, inst.sop))
        assert jvalue(md[0], "00080018") == inst.sop

    # And the other way round, including the duplicate check across servers.
    extra = Instance.make("two-servers/extra", study_uid=study, series_uid=series, instance_number=9,
                          patient_id="PID-TWO")
    res = stow(b, [extra.data, insts[0].data])
    assert res.status == 200, res.describe()
    assert_instance_bytes(a, extra.study, extra.series, extra.sop, extra.data)
    hits = qido(a, "/dicomweb/instances", {"StudyInstanceUID": study})
    assert len(hits) == 4, f"{len(hits)} instances"
