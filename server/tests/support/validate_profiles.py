"""Validate NDJSON records that evidex emits for a SIEM profile, independently of
evidex's own code, against the reference schemas in shared/schemas (see its README.md).

Usage: validate_profiles.py PROFILE FILE     PROFILE = ecs | ocsf | splunk_hec
Schemas: $SHARED_SCHEMAS, else the nearest shared/schemas above the repository (or
above the repository it was cloned from). Prints "ok N records" and
exits 0, or prints up to 50 errors ("line N: field.path: problem") and exits 1. An
empty file is an error. Only the standard library and PyYAML are used.

ecs  (Elastic Common Schema 9.4.0, ecs-9.4.0/ecs_flat.yml)
  Nested objects and dotted keys are flattened to field paths; each must be an ECS
  field, except under the custom namespace `evidex.`. Fields typed object, flattened
  or nested take an object (nested: or an array) whose contents are not checked, and
  any path below such a field is accepted. Values are checked against the ECS type
  (keyword-like -> string, long/integer/... -> int, float/double/... -> number,
  boolean, date -> ISO 8601 string, ip, geo_point), arrays only where the field has
  `normalize: [array]`, `pattern` regexes, and `allowed_values`. `@timestamp`,
  `ecs.version` and `event.kind` are required, and each event.type value must be an
  `expected_event_types` entry of at least one event.category value.

ocsf (OCSF 1.9.0-dev, ocsf-1.9.0-dev/): an API Activity event (class_uid 6003).
  The class's attributes are base_event.json <- application.json <- api_activity.json
  merged along `extends` (a child overrides requirement/profile and extends enums),
  with the attributes `$include`d from profiles belonging to that profile: they are
  only defined, and only required, when the profile is listed in metadata.profiles
  (e.g. security_control: action_id, disposition_id, policy...; datetime: `*_dt`
  siblings of timestamp_t attributes). Objects (objects/NAME.json, merged along
  `extends`) are checked recursively the same way: required attributes, no undefined
  attributes, `constraints` (at_least_one / just_one). `unmapped` and json_t / object
  typed attributes are free. Values: dictionary.json `types` followed to their
  primitive (string/integer/long/float/boolean/json) with their regex, range and
  max_len; `is_array`; enum ids (dictionary enum merged with the class/object one);
  enum labels (activity_name, severity, status, action, disposition, type_name,
  class_name, category_name...) must equal the caption unless the id is 99 (Other),
  in which case the label is required. class_uid == 6003, category_uid == 6 and
  type_uid == class_uid * 100 + activity_id.

splunk_hec (Splunk HTTP Event Collector event format, /services/collector/event)
  Keys only time, host, source, sourcetype, index, event, fields; `event` required
  (non-empty object or string); `time` a number (epoch seconds, fraction allowed);
  host/source/sourcetype/index strings; `fields` an object whose values are strings
  or arrays of strings (Splunk indexed fields are flat).
"""

import datetime
import ipaddress
import json
import os
import re
import sys
from pathlib import Path

import yaml

def find_schemas():
    """$SHARED_SCHEMAS, else the first shared/schemas beside the repository or any
    folder above it, else beside (or above) the repository it was cloned from, so a
    clone anywhere under the checkout's parent -- or a clone of it -- finds them."""
    if os.environ.get("SHARED_SCHEMAS"):
        return Path(os.environ["SHARED_SCHEMAS"])
    repo = Path(__file__).resolve().parents[3]
    roots = [repo]
    try:
        import subprocess
        origin = subprocess.run(["git", "-C", str(repo), "remote", "get-url", "origin"],
                                capture_output=True, text=True, check=False).stdout.strip()
        if origin and Path(origin).is_dir():
            roots.append(Path(origin).resolve())
    except OSError:
        pass
    for root in roots:
        for folder in root.parents:
            if (folder / "shared" / "schemas").is_dir():
                return folder / "shared" / "schemas"
    return repo.parent / "shared" / "schemas"


SCHEMAS = find_schemas()
MAX_ERRORS = 50


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def is_date(v):
    try:
        datetime.datetime.fromisoformat(v)
        return True
    except (TypeError, ValueError):
        return False


def is_ip(v):
    try:
        ipaddress.ip_address(v)
        return True
    except ValueError:
        return False


# ---------------------------------------------------------------- ECS

ECS_KINDS = {
    **dict.fromkeys(["keyword", "constant_keyword", "wildcard", "text", "match_only_text"],
                    ("a string", lambda v: isinstance(v, str))),
    **dict.fromkeys(["long", "integer", "short", "byte"], ("an integer", is_int)),
    "unsigned_long": ("a non-negative integer", lambda v: is_int(v) and v >= 0),
    **dict.fromkeys(["float", "double", "scaled_float", "half_float"], ("a number", is_num)),
    "boolean": ("a boolean", lambda v: isinstance(v, bool)),
    "date": ("an ISO 8601 date string", lambda v: isinstance(v, str) and is_date(v)),
    "ip": ("an IP address string", lambda v: isinstance(v, str) and is_ip(v)),
    "geo_point": ("a geo_point", lambda v: isinstance(v, str) or (
        isinstance(v, dict) and is_num(v.get("lat")) and is_num(v.get("lon"))) or (
        isinstance(v, list) and len(v) == 2 and all(map(is_num, v)))),
}
ECS_OBJECT_TYPES = {"object", "flattened", "nested"}


class Ecs:
    def __init__(self, root):
        with open(root / "ecs-9.4.0" / "ecs_flat.yml") as f:
            self.fields = yaml.safe_load(f)
        cat = self.fields["event.category"]["allowed_values"]
        self.expected_types = {c["name"]: set(c.get("expected_event_types") or []) for c in cat}

    def under_object(self, path):
        parts = path.split(".")
        return any(self.fields.get(".".join(parts[:i]), {}).get("type") in ECS_OBJECT_TYPES
                   for i in range(1, len(parts)))

    def flatten(self, obj, prefix, flat, err):
        for key, value in obj.items():
            path = f"{prefix}.{key}" if prefix else key
            field = self.fields.get(path)
            if path == "evidex" or path.startswith("evidex."):
                continue
            if isinstance(value, dict) and (field is None or field["type"] not in ECS_OBJECT_TYPES) \
                    and not self.under_object(path):
                if field is not None:
                    err(path, f"object given for an ECS {field['type']} field")
                else:
                    self.flatten(value, path, flat, err)
            elif path in flat:
                err(path, "given twice (nested and dotted)")
            else:
                flat[path] = value

    def check(self, rec, err):
        flat = {}
        self.flatten(rec, "", flat, err)
        for path, value in flat.items():
            field = self.fields.get(path)
            if field is None:
                if not self.under_object(path):
                    err(path, "not an ECS 9.4.0 field (custom fields go under evidex.)")
                continue
            ftype = field["type"]
            if value is None:
                err(path, "null value (omit the field instead)")
                continue
            if ftype in ECS_OBJECT_TYPES:
                if not (isinstance(value, dict) or (ftype == "nested" and isinstance(value, list))):
                    err(path, f"ECS {ftype} field needs an object, got {json.dumps(value)[:60]}")
                continue
            if isinstance(value, list):
                if "array" not in (field.get("normalize") or []):
                    err(path, "array given but the field is not normalized to an array")
                    continue
                values = value
            else:
                values = [value]
            what, ok = ECS_KINDS.get(ftype, ("?", lambda v: True))
            allowed = {a["name"] for a in field.get("allowed_values") or []}
            for v in values:
                if not ok(v):
                    err(path, f"ECS {ftype} needs {what}, got {json.dumps(v)[:60]}")
                elif allowed and v not in allowed:
                    err(path, f"{v!r} is not an allowed value ({', '.join(sorted(allowed))})")
                elif field.get("pattern") and isinstance(v, str) and not re.search(field["pattern"], v):
                    err(path, f"{v!r} does not match pattern {field['pattern']}")
        for path in ("@timestamp", "ecs.version", "event.kind"):
            if path not in flat:
                err(path, "required field missing")
        as_list = lambda v: v if isinstance(v, list) else [v]
        cats = [c for c in as_list(flat.get("event.category", [])) if c in self.expected_types]
        if cats:
            fits = set().union(*(self.expected_types[c] for c in cats))
            for t in as_list(flat.get("event.type", [])):
                if isinstance(t, str) and t not in fits:
                    err("event.type", f"{t!r} is not an expected event type of category "
                        f"{cats} (expected one of {sorted(fits)})")


# ---------------------------------------------------------------- OCSF

def merge(a, b):
    """Deep merge b over a (b wins; nested dicts such as enum are merged)."""
    out = dict(a)
    for k, v in b.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


PRIMITIVES = {
    "string_t": ("a string", lambda v: isinstance(v, str)),
    "integer_t": ("an integer", is_int),
    "long_t": ("an integer", is_int),
    "float_t": ("a number", is_num),
    "boolean_t": ("a boolean", lambda v: isinstance(v, bool)),
    "json_t": ("a JSON value", lambda v: True),
}
FREE_OBJECTS = {"object", "object_t"}


class Ocsf:
    CLASS = "api_activity"

    def __init__(self, root):
        self.root = root / "ocsf-1.9.0-dev"
        load = lambda p: json.loads((self.root / p).read_text())
        dictionary = load("dictionary.json")
        self.dict_attrs = dictionary["attributes"]
        self.types = dictionary["types"]["attributes"]
        self.profile_names = {p.stem for p in (self.root / "profiles").glob("*.json")}
        self.load = load
        self.objects = {}
        cls = self.resolve(self.event_file(self.CLASS), self.event_file)
        self.attrs = cls["attributes"]
        categories = load("categories.json")["attributes"]
        chain = self.chain(self.event_file(self.CLASS), self.event_file)
        category = next(c["category"] for c in chain if c.get("category"))
        cat_uid = categories[category]["uid"]
        self.class_uid = cat_uid * 1000 + chain[0]["uid"]
        self.class_caption = chain[0]["caption"]
        # the uid attributes' enums are the class's own (base_event's list Base Event)
        acts = self.enum_of("activity_id", self.attrs["activity_id"])
        uid_enums = {
            "category_uid": {str(cat_uid): {"caption": categories[category]["caption"]}},
            "class_uid": {str(self.class_uid): {"caption": self.class_caption}},
            "type_uid": {str(self.class_uid * 100 + int(k)): {"caption": f"{self.class_caption}: {e['caption']}"}
                         for k, e in acts.items()}}
        for k, enum in uid_enums.items():
            self.attrs[k] = {**self.attrs[k], "enum": enum, "own_enum": True}

    def event_file(self, name):
        return next((self.root / "events").rglob(f"{name}.json"))

    def object_file(self, name):
        return self.root / "objects" / f"{name}.json"

    def chain(self, path, find):
        data = json.loads(path.read_text())
        return [data] + (self.chain(find(data["extends"]), find) if data.get("extends") else [])

    def file_attrs(self, data):
        own = data.get("attributes", {})
        out = {}
        for inc in own.get("$include", []):
            prof = self.load(inc)
            for k, v in prof["attributes"].items():
                out[k] = merge(v, {"profile": prof["name"]})
        for k, v in own.items():
            if k != "$include":
                out[k] = merge(out.get(k, {}), v)
        return out

    def resolve(self, path, find):
        attrs, constraints = {}, {}
        for data in reversed(self.chain(path, find)):
            fa = self.file_attrs(data)
            attrs = {k: merge(attrs.get(k, {}), fa.get(k, {})) for k in {**attrs, **fa}}
            constraints.update(data.get("constraints", {}))
        return {"attributes": attrs, "constraints": constraints}

    def obj(self, name):
        if name not in self.objects:
            path = self.object_file(name)
            self.objects[name] = self.resolve(path, self.object_file) if path.exists() else None
        return self.objects[name]

    def enum_of(self, name, adef):
        if adef.get("own_enum"):
            return adef["enum"]
        return merge(self.dict_attrs.get(name, {}).get("enum") or {}, adef.get("enum") or {})

    def type_of(self, name, adef):
        return adef.get("type") or self.dict_attrs.get(name, {}).get("type")

    def check_type(self, path, tname, v, err):
        t, checks = tname, []
        while t in self.types:
            checks.append(self.types[t])
            if not self.types[t].get("type"):
                break
            t = self.types[t]["type"]
        what, ok = PRIMITIVES.get(t, ("?", lambda v: True))
        problem = None if ok(v) else f"{tname} needs {what}, got {json.dumps(v)[:60]}"
        for c in checks:
            if problem:
                break
            if "regex" in c and not re.search(c["regex"], v):
                problem = f"{v!r} is not a valid {tname}"
            elif "max_len" in c and len(v) > c["max_len"]:
                problem = f"longer than {c['max_len']} ({tname})"
            elif "range" in c and not c["range"][0] <= v <= c["range"][1]:
                problem = f"{v} outside {c['range']} ({tname})"
        if problem:
            err(path, problem)
        return problem is None

    def check_object(self, obj, attrs, constraints, path, profiles, err):
        active = lambda a: not a.get("profile") or a["profile"] in profiles
        for name, a in sorted(attrs.items()):
            if a.get("requirement") == "required" and active(a) and obj.get(name) is None:
                err(f"{path}{name}", "required attribute missing"
                    + (f" (profile {a['profile']})" if a.get("profile") else ""))
        for key, value in obj.items():
            p = f"{path}{key}"
            a = attrs.get(key)
            if a is None:
                base = attrs.get(key[:-3]) if key.endswith("_dt") else None
                if base is not None and "datetime" in profiles and \
                        self.type_of(key[:-3], base) == "timestamp_t":
                    self.check_type(p, "datetime_t", value, err)
                else:
                    err(p, "attribute not defined here"
                        + (" (the datetime profile is not listed)" if base is not None else ""))
                continue
            if not active(a):
                err(p, f"attribute of profile {a['profile']!r}, which metadata.profiles does not list")
                continue
            if value is None:
                err(p, "null value (omit the attribute instead)")
                continue
            self.check_attr(key, a, value, p, profiles, err)
        for id_name, a in attrs.items():  # enum id vs its sibling label
            label = a.get("sibling") or self.dict_attrs.get(id_name, {}).get("sibling")
            enum = self.enum_of(id_name, a)
            if not label or label not in attrs or not enum or not is_int(obj.get(id_name)):
                continue
            if obj[id_name] == 99 and obj.get(label) is None:
                err(f"{path}{label}", f"required when {id_name} is 99 (Other)")
            elif obj[id_name] != 99 and obj.get(label) not in (None, "Other"):
                caption = enum.get(str(obj[id_name]), {}).get("caption")
                if caption is not None and obj[label] != caption:
                    err(f"{path}{label}", f"{obj[label]!r} does not match the caption {caption!r} "
                        f"of {id_name} {obj[id_name]}")
        for kind, names in constraints.items():
            n = sum(obj.get(k) is not None for k in names)
            if (kind == "at_least_one" and n == 0) or (kind == "just_one" and n != 1):
                err(path.rstrip(".") or "(event)", f"constraint {kind} of {names} not met")

    def check_attr(self, name, adef, value, path, profiles, err):
        d = self.dict_attrs.get(name)
        if d is None and "type" not in adef:
            return err(path, "attribute missing from dictionary.json")
        tname = self.type_of(name, adef)
        is_array = adef.get("is_array", (d or {}).get("is_array", False))
        if tname in FREE_OBJECTS or tname == "json_t":
            return
        if is_array != isinstance(value, list):
            return err(path, "must be an array" if is_array else "must not be an array")
        enum = self.enum_of(name, adef)
        for i, v in enumerate(value if is_array else [value]):
            p = f"{path}[{i}]" if is_array else path
            if tname.endswith("_t"):
                if self.check_type(p, tname, v, err) and enum and str(v) not in enum:
                    err(p, f"{v!r} not in enum ({', '.join(sorted(enum, key=int))})")
                continue
            definition = self.obj(tname)
            if definition is None:
                continue
            if not isinstance(v, dict):
                err(p, f"object {tname} needs a JSON object")
                continue
            self.check_object(v, definition["attributes"], definition["constraints"], p + ".",
                              profiles, err)

    def check(self, rec, err):
        profiles = (rec.get("metadata") or {}).get("profiles") if isinstance(rec.get("metadata"), dict) else None
        profiles = set(profiles) if isinstance(profiles, list) and all(isinstance(x, str) for x in profiles) else set()
        for p in sorted(profiles - self.profile_names):
            err("metadata.profiles", f"unknown profile {p!r}")
        self.check_object(rec, self.attrs, {}, "", profiles, err)
        ids = [rec.get(k) for k in ("class_uid", "activity_id", "type_uid")]
        if all(map(is_int, ids)) and ids[2] != ids[0] * 100 + ids[1]:
            err("type_uid", f"{ids[2]} != class_uid * 100 + activity_id ({ids[0] * 100 + ids[1]})")


# ---------------------------------------------------------------- Splunk HEC

class SplunkHec:
    KEYS = {"time", "host", "source", "sourcetype", "index", "event", "fields"}

    def __init__(self, root):
        pass

    def check(self, rec, err):
        for k in sorted(set(rec) - self.KEYS):
            err(k, "not an HEC event key (time, host, source, sourcetype, index, event, fields)")
        ev = rec.get("event")
        if not isinstance(ev, (dict, str)) or ev in ("", {}):
            err("event", "required, a non-empty object or string")
        if "time" in rec and not is_num(rec["time"]):
            err("time", f"must be a number of epoch seconds, got {json.dumps(rec['time'])[:40]}")
        for k in ("host", "source", "sourcetype", "index"):
            if k in rec and not isinstance(rec[k], str):
                err(k, "must be a string")
        fields = rec.get("fields", {})
        if not isinstance(fields, dict):
            return err("fields", "must be an object")
        for k, v in fields.items():
            if not (isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v))):
                err(f"fields.{k}", f"indexed field values must be strings or arrays of strings, "
                    f"got {json.dumps(v)[:60]}")


# ---------------------------------------------------------------- main

def main(argv):
    if len(argv) != 3 or argv[1] not in ("ecs", "ocsf", "splunk_hec"):
        sys.exit(__doc__.split("\n\n")[1])
    if argv[1] != "splunk_hec" and not SCHEMAS.is_dir():
        sys.exit(f"the reference schemas are not at {SCHEMAS}: the repository's sibling "
                 f"folder shared/schemas holds them; or set SHARED_SCHEMAS to their folder")
    validator = {"ecs": Ecs, "ocsf": Ocsf, "splunk_hec": SplunkHec}[argv[1]](SCHEMAS)
    errors, records = [], 0
    with open(argv[2], encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            records += 1
            err = lambda path, problem, n=n: errors.append(f"line {n}: {path}: {problem}")
            try:
                rec = json.loads(line)
            except ValueError as e:
                err("(record)", f"not JSON: {e}")
                continue
            if not isinstance(rec, dict):
                err("(record)", "not a JSON object")
                continue
            validator.check(rec, err)
    if records == 0:
        errors.append(f"{argv[2]}: no records")
    if errors:
        print("\n".join(errors[:MAX_ERRORS]))
        if len(errors) > MAX_ERRORS:
            print(f"... {len(errors) - MAX_ERRORS} more errors")
        return 1
    print(f"ok {records} records")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
