"""Who sees what in Grafana (issue 14): checked on the compose file and the provisioning, since Grafana itself
is not installed here. No anonymous viewers; sign-in maps the identity provider's roles to one organisation
each; the regulator organisation holds the regulator dashboard and its data sources, nothing else."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
ACCESS = ROOT / "provisioning" / "grafana" / "access"


def _access_module() -> Any:
    spec = importlib.util.spec_from_file_location("grafana_access", ACCESS / "access.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def _compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _uids(value: Any) -> set[str]:
    """Every data-source uid a dashboard JSON refers to."""
    found: set[str] = set()
    if isinstance(value, dict):
        source = value.get("datasource")
        if isinstance(source, dict) and isinstance(source.get("uid"), str) and not source["uid"].startswith("$"):
            found.add(source["uid"])
        for item in value.values():
            found |= _uids(item)
    elif isinstance(value, list):
        for item in value:
            found |= _uids(item)
    return found


def test_grafana_has_no_anonymous_viewers_and_no_explore_for_viewers():
    grafana = _compose()["services"]["grafana"]
    env = grafana["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false", "no switch in .env may open Grafana to anonymous visitors"
    assert not any(key.startswith("GF_AUTH_ANONYMOUS_ORG") for key in env)
    assert env["GF_USERS_VIEWERS_CAN_EDIT"] == "false"
    assert env["GF_USERS_ALLOW_SIGN_UP"] == "false"
    assert all(port.startswith("${GRAFANA_BIND:-127.0.0.1}:") for port in grafana["ports"])
    example = (ROOT / ".env.example").read_text()
    assert "GRAFANA_ANONYMOUS" not in example


def test_sign_in_maps_every_role_to_one_organisation_and_regulators_to_their_own():
    compose = _compose()
    env = compose["services"]["grafana"]["environment"]
    assert env["GF_AUTH_GENERIC_OAUTH_ROLE_ATTRIBUTE_STRICT"] == "true", "no role, no access"
    assert env["GF_USERS_AUTO_ASSIGN_ORG"] == "false"
    assert env["GF_AUTH_GENERIC_OAUTH_CLIENT_SECRET__FILE"].startswith("/run/secrets/")
    assert "grafana_oauth_client_secret" in compose["services"]["grafana"]["secrets"]
    assert "grafana_oauth_client_secret" in compose["secrets"]
    mapping = {}
    for entry in env["GF_AUTH_GENERIC_OAUTH_ORG_MAPPING"].split():
        role, org, grafana_role = entry.split(":")
        mapping.setdefault(role, []).append((org, grafana_role))
    assert mapping == {"admin": [("1", "Admin")], "engineer": [("1", "Editor")], "operator": [("1", "Viewer")],
                       "viewer": [("1", "Viewer")], "regulator": [("Regulator", "Viewer")]}
    orgs = yaml.safe_load((ACCESS / "access.yaml").read_text())["orgs"]
    assert {o.get("name") for o in orgs} >= {"Regulator"} and [o["id"] for o in orgs if "id" in o] == [1]
    from core.auth import ROLES
    assert set(mapping) == set(ROLES), "the same roles as the alert API"


def test_the_regulator_organisation_holds_only_the_regulator_dashboard_and_its_data_sources():
    access = _access_module()
    config = yaml.safe_load((ACCESS / "access.yaml").read_text())
    datasources = yaml.safe_load((ROOT / "provisioning" / "grafana" / "datasources" / "datasources.yml").read_text())
    env = {"INFLUXDB_DB": "cascade", "INFLUXDB_READ_USER": "grafana", "INFLUXDB_READ_USER_PASSWORD": "pw"}
    calls = access.plan(config, ROOT / "dashboards", datasources, env)

    regulator = [c for c in calls if c.org == "Regulator"]
    dashboards = [c.body["dashboard"] for c in regulator if c.path == "/api/dashboards/db"]
    assert [d["uid"] for d in dashboards] == ["cascade-regulator"]
    assert all("id" not in d for d in dashboards)
    sources = [c.body for c in regulator if c.path == "/api/datasources"]
    assert {s["uid"] for s in sources} == _uids(dashboards[0]), "exactly the data sources its panels use"
    influx = next(s for s in sources if s["type"] == "influxdb")
    assert influx["user"] == "grafana" and influx["secureJsonData"]["password"] == "pw"
    assert influx["jsonData"]["dbName"] == "cascade" and "orgId" not in influx
    [perms] = [c.body["items"] for c in regulator if c.path.endswith("/permissions")]
    assert perms == [{"role": "Viewer", "permission": 1}], "regulators look, nobody edits"

    # The organisation is created before anything goes into it; the NOC org keeps everything else.
    assert calls.index(next(c for c in calls if c.path == "/api/orgs")) < calls.index(regulator[1])
    noc = [c for c in calls if c.org == 1 and c.path.endswith("/permissions")]
    provider = yaml.safe_load((ROOT / "provisioning" / "grafana" / "dashboards" / "dashboards.yml").read_text())
    assert [c.path for c in noc] == [f"/api/folders/{provider['providers'][0]['folderUid']}/permissions"]
    assert all(item["permission"] == 1 for item in noc[0].body["items"]), "provisioned dashboards: view only"


def test_the_access_service_runs_after_grafana_and_stays_healthy_only_while_it_applies():
    service = _compose()["services"]["grafana-access"]
    assert service["depends_on"] == {"grafana": {"condition": "service_healthy"}}
    assert service["entrypoint"][-1] == "/etc/cascade-grafana/access/access.py"
    assert "./provisioning/grafana:/etc/cascade-grafana:ro" in service["volumes"]
    assert "./dashboards:/dashboards:ro" in service["volumes"]
    assert "--ok-file" in service["command"] and "grafana-access.ok" in json.dumps(service["healthcheck"]["test"])
    for name in ("INFLUXDB_READ_USER", "INFLUXDB_READ_USER_PASSWORD", "GF_SECURITY_ADMIN_PASSWORD"):
        assert name in service["environment"]
