"""The docker driver's pure parts: container ids from /proc/<pid>/cgroup, configuration."""

from __future__ import annotations

import pytest

from rewind.files.docker import DockerConfig, DriverError, container_id_from_cgroup

pytestmark = pytest.mark.unit

CID = "a260ae88e41b27da552a2aac62f2f113c93d5e37023ff8fdcafffaca5a383937"
OTHER = "b" * 64


@pytest.mark.parametrize(
    "text",
    [
        f"0::/system.slice/docker-{CID}.scope\n",
        f"0::/docker/{CID}\n",
        f"12:memory:/docker/{CID}\n11:pids:/docker/{CID}\n1:name=systemd:/docker/{CID}\n",
        f"0::/system.slice/docker-{CID}.scope/sub/{OTHER}\n",  # nested: outermost wins
        f"0::/kubepods/besteffort/pod1234/{CID}\n",
        f"5:cpu:/docker/{CID}\n4:rdma:/\n",  # a controller left at the root
    ],
)
def test_container_ids_are_found(text: str) -> None:
    assert container_id_from_cgroup(text) == CID


@pytest.mark.parametrize(
    "text",
    [
        "0::/\n",
        "0::/user.slice/user-0.slice/session-1.scope\n",
        "12:memory:/\n1:name=systemd:/init.scope\n",
        f"0::/docker/{CID[:63]}\n",
        f"0::/docker/{CID}x\n",
        f"12:memory:/docker/{CID}\n11:pids:/docker/{OTHER}\n",  # lines disagree
        "",
        "garbage",
    ],
)
def test_non_container_callers_have_no_id(text: str) -> None:
    assert container_id_from_cgroup(text) is None


def test_config_from_env() -> None:
    cfg = DockerConfig.from_env({"REWIND_HOST_MAX_BYTES": "16m"}, "/srv/snaps")
    assert (cfg.snapshot_dir, cfg.max_bytes) == ("/srv/snaps", 16 << 20)
    assert DockerConfig.from_env({}).snapshot_dir == "/var/lib/rewind/host-snapshots"
    assert DockerConfig.from_env({}).max_bytes == 1 << 30
    for bad in ("0", "-1", "lots", "1.5g"):
        with pytest.raises(DriverError, match="REWIND_HOST_MAX_BYTES"):
            DockerConfig.from_env({"REWIND_HOST_MAX_BYTES": bad})
    with pytest.raises(DriverError, match="absolute"):
        DockerConfig.from_env({}, "relative/dir").validate()
