"""`openapi/localhub.yaml` is a valid OpenAPI 3.1 document and says what LocalHub's code does:
the same routes (method and path) as the `router.add(…)` calls in `Sources/LocalHub`, the
same authorization per route, the same error codes as `ServiceError.swift`, the same default
ports as `LocalHub.swift`, and examples that fit their schemas.

The routes are read from the Swift sources with a small scanner that understands the shapes
the route files use: `router.add(.GET, "pattern")`, and calls inside `for` loops over array
literals (`for (prefix, isModule) in [("devices/:id", false), …] { router.add(.PUT, prefix) }`,
nested loops binding the method, `prefix + "/methods"`). Anything it cannot resolve fails the
test loudly instead of being skipped, so the comparison cannot drift silently.
"""
import re
from collections import namedtuple
from pathlib import Path

import pytest
import yaml
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import OpenAPIV31SpecValidator, validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

ROOT = Path(__file__).resolve().parents[2]
SPEC_PATH = ROOT / "openapi" / "localhub.yaml"
SOURCES = ROOT / "Sources" / "LocalHub"
# The routes of `BlobRoutes`, which the blob listener serves; every other file's routes
# are on the HTTPS listener.
BLOB_ROUTE_FILE = "BlobRoutes.swift"
# The routes of `EdgeWorkloadRoutes` (in EdgeWorkloadAPI.swift), which the IoT Edge workload API's unix socket serves.
WORKLOAD_ROUTE_FILE = "EdgeWorkloadAPI.swift"
OPERATION_KEYS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")

Method = namedtuple("Method", "name")
Route = namedtuple("Route", "method path listener authorization location")


# ---------------------------------------------------------------------------- Swift scanner

def _string_end(text, i):
    """`text[i]` starts a string literal (`"…"`, `\"\"\"…\"\"\"`, `#"…"#`); returns the index after it."""
    start = i
    hashes = 0
    while text[i] == "#":
        hashes += 1
        i += 1
    delimiter = '"""' if text.startswith('"""', i) else '"'
    i += len(delimiter)
    closing = delimiter + "#" * hashes
    escape = "\\" + "#" * hashes
    while i < len(text):
        if text.startswith(escape, i):
            i += len(escape)
            if i < len(text) and text[i] == "(":
                i = _balanced_end(text, i)  # an interpolation, which may hold strings itself
            else:
                i += 1
            continue
        if text.startswith(closing, i):
            return i + len(closing)
        if delimiter == '"' and text[i] == "\n":
            break
        i += 1
    raise SyntaxError("unterminated string literal at offset {}".format(start))


def _skip_literal(text, i):
    """The index after the comment or string literal at `i`, or None if none starts there."""
    if text.startswith("//", i):
        end = text.find("\n", i)
        return len(text) if end < 0 else end
    if text.startswith("/*", i):
        depth, i = 1, i + 2
        while depth:
            if i >= len(text):
                raise SyntaxError("unterminated comment")
            if text.startswith("/*", i):
                depth, i = depth + 1, i + 2
            elif text.startswith("*/", i):
                depth, i = depth - 1, i + 2
            else:
                i += 1
        return i
    if text[i] == '"' or (text[i] == "#" and re.match(r'#+"', text[i:i + 8])):
        return _string_end(text, i)
    return None


PAIRS = {"(": ")", "[": "]", "{": "}"}


def _balanced_end(text, i):
    """`text[i]` is `(`, `[` or `{`; returns the index after its partner."""
    stack = [PAIRS[text[i]]]
    i += 1
    while stack:
        if i >= len(text):
            raise SyntaxError("unbalanced brackets")
        skipped = _skip_literal(text, i)
        if skipped is not None:
            i = skipped
            continue
        character = text[i]
        if character in PAIRS:
            stack.append(PAIRS[character])
        elif character in ")]}":
            if character != stack.pop():
                raise SyntaxError("mismatched {!r} at offset {}".format(character, i))
        i += 1
    return i


def _split_top_level(text, separator):
    """Splits at `separator` characters outside brackets, strings and comments."""
    parts, start, i = [], 0, 0
    while i < len(text):
        skipped = _skip_literal(text, i)
        if skipped is not None:
            i = skipped
        elif text[i] in PAIRS:
            i = _balanced_end(text, i)
        elif text[i] == separator:
            parts.append(text[start:i])
            start = i = i + 1
        else:
            i += 1
    parts.append(text[start:])
    return [part.strip() for part in parts if part.strip()]


def _evaluate(expression, environment):
    """A string, a Method, or None for the expressions route registrations use."""
    terms = _split_top_level(expression, "+")
    if len(terms) > 1:
        values = [_evaluate(term, environment) for term in terms]
        return "".join(values) if all(isinstance(value, str) for value in values) else None
    term = expression.strip()
    literal = re.fullmatch(r'"((?:[^"\\]|\\[^(])*)"', term)
    if literal:
        return re.sub(r"\\(.)", r"\1", literal.group(1))
    method = re.fullmatch(r"(?:HTTPMethod)?\.([A-Z]+)", term)
    if method:
        return Method(method.group(1))
    return environment.get(term)


def _authorization(handler):
    kinds = [kind for kind, call in (("service", "authorizeService("), ("device", "authorizeDevice("),
                                     ("blob", "blobs.authorize("), ("provisioning", "authorizeProvisioningService("),
                                     ("methodInvocation", "authorizeMethodInvocation("))
             if call in handler]
    return kinds[0] if len(kinds) == 1 else None


FOR_LITERAL = re.compile(r"\bfor\s+(?:\(\s*(\w+)\s*(?:,\s*\w+\s*)*\)|(\w+))\s+in\s*\[")
ROUTE_CALL = re.compile(r"\brouter\.add\(")


def _scan(text, start, end, environment, where, routes):
    i = start
    while i < end:
        skipped = _skip_literal(text, i)
        if skipped is not None:
            i = skipped
            continue
        loop = FOR_LITERAL.match(text, i)
        brace = None
        if loop:
            list_end = brace = _balanced_end(text, loop.end() - 1)
            while text[brace].isspace():
                brace += 1
        # Only `for … in [literal] {` is expanded. Other loops (`[…].compactMap(…)`, `where`)
        # are scanned as plain code: a route inside one fails to resolve, loudly.
        if loop and text[brace] == "{":
            variable = loop.group(1) or loop.group(2)
            body_end = _balanced_end(text, brace)
            for element in _split_top_level(text[loop.end():list_end - 1], ","):
                if loop.group(1):  # a tuple pattern: bind its first member
                    assert element.startswith("(") and element.endswith(")"), "{}: loop element {!r} is not a tuple".format(where, element)
                    element = _split_top_level(element[1:-1], ",")[0]
                _scan(text, brace + 1, body_end - 1, {**environment, variable: _evaluate(element, environment)}, where, routes)
            i = body_end
            continue
        call = ROUTE_CALL.match(text, i)
        if call:
            arguments_end = _balanced_end(text, call.end() - 1)
            arguments = _split_top_level(text[call.end():arguments_end - 1], ",")
            line = text.count("\n", 0, i) + 1
            location = "{}:{}".format(where, line)
            assert len(arguments) >= 2, "{}: cannot read router.add arguments {!r}".format(location, arguments)
            method, pattern = _evaluate(arguments[0], environment), _evaluate(arguments[1], environment)
            assert isinstance(method, Method), "{}: cannot resolve the method {!r}".format(location, arguments[0])
            assert isinstance(pattern, str), "{}: cannot resolve the pattern {!r}".format(location, arguments[1])
            # The handler: a trailing closure, or the third argument.
            handler_start = arguments_end
            while handler_start < len(text) and text[handler_start].isspace():
                handler_start += 1
            if handler_start < len(text) and text[handler_start] == "{":
                handler_end = _balanced_end(text, handler_start)
                handler = text[handler_start:handler_end]
            else:
                handler_end = arguments_end
                handler = ",".join(arguments[2:])
            routes.append((method.name, pattern, handler, location))
            i = handler_end
            continue
        i += 1


def swift_routes_in(text, where="<text>"):
    """(method, pattern, handler text, location) of every `router.add` in Swift source `text`."""
    routes = []
    _scan(text, 0, len(text), {}, where, routes)
    return routes


def openapi_path(pattern):
    """`devices/:id` → `/devices/{id}`; `:container/*blob` → `/{container}/{blob}`."""
    segments = [segment for segment in pattern.split("/") if segment]
    return "/" + "/".join("{" + segment[1:] + "}" if segment[0] in ":*" else segment for segment in segments)


def source_routes():
    routes = []
    for source in sorted(SOURCES.rglob("*.swift")):
        where = str(source.relative_to(ROOT))
        for method, pattern, handler, location in swift_routes_in(source.read_text(encoding="utf-8"), where):
            listener = {BLOB_ROUTE_FILE: "blob", WORKLOAD_ROUTE_FILE: "workload"}.get(source.name, "https")
            # The workload API checks no credential: the socket's permissions decide.
            authorization = "workload" if listener == "workload" else _authorization(handler)
            routes.append(Route(method, openapi_path(pattern), listener, authorization, location))
    return routes


# ---------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def spec():
    with SPEC_PATH.open(encoding="utf-8") as file:
        return yaml.safe_load(file)


@pytest.fixture(scope="module")
def routes():
    found = source_routes()
    assert found, "no router.add calls found under {}".format(SOURCES)
    return found


def operations(spec):
    for path, item in spec["paths"].items():
        for key in OPERATION_KEYS:
            if key in item:
                yield path, key, item, item[key]


# ---------------------------------------------------------------------------- tests

def test_document_is_valid_openapi_3_1(spec):
    assert str(spec["openapi"]).startswith("3.1.")
    validate(spec, cls=OpenAPIV31SpecValidator)


def test_scanner_reads_literal_routes_and_loops():
    source = r'''
        // router.add(.GET, "commented/out")
        /* router.add(.GET, "block/comment") { } */
        router.add(.GET, "plain") { [self] request, _ in
            try authorizeService(request)
            throw .badRequest("a { brace and router.add(.PUT, \"in/a/string\") \(parameters["x"])")
        }
        for (prefix, isModule) in [("things/:id", false), ("things/:id/parts/:pid", true)] {
            router.add(.PUT, prefix) { _, _ in try authorizeDevice(request, key: key) }
            for (method, replace) in [(HTTPMethod.PATCH, false), (.POST, true)] {
                router.add(method, prefix + "/more") { _, _ in try authorizeService(request) }
            }
        }
        for name in ["a", "b"] { router.add(.DELETE, "names/" + name) { _, _ in blobs.authorize(x) } }
        router.add(.GET, ":container/*blob") { _, _ in }
    '''
    found = [(method, openapi_path(pattern), _authorization(handler)) for method, pattern, handler, _ in swift_routes_in(source)]
    assert found == [
        ("GET", "/plain", "service"),
        ("PUT", "/things/{id}", "device"),
        ("PATCH", "/things/{id}/more", "service"),
        ("POST", "/things/{id}/more", "service"),
        ("PUT", "/things/{id}/parts/{pid}", "device"),
        ("PATCH", "/things/{id}/parts/{pid}/more", "service"),
        ("POST", "/things/{id}/parts/{pid}/more", "service"),
        ("DELETE", "/names/a", "blob"),
        ("DELETE", "/names/b", "blob"),
        ("GET", "/{container}/{blob}", None),
    ]


def test_scanner_fails_loudly_on_what_it_cannot_resolve():
    with pytest.raises(AssertionError, match="cannot resolve the pattern"):
        swift_routes_in('for p in table { router.add(.GET, p) { _, _ in } }')
    with pytest.raises(AssertionError, match="cannot resolve the pattern"):
        swift_routes_in('for p in ["a", "b"].map({ $0 }) { router.add(.GET, p) { _, _ in } }')
    with pytest.raises(AssertionError, match="cannot resolve the method"):
        swift_routes_in('router.add(someMethod, "x") { _, _ in }')


def test_every_source_route_is_documented_and_nothing_else(spec, routes):
    in_sources = {}
    for route in routes:
        key = (route.method, route.path)
        assert key not in in_sources, "route registered twice: {} and {}".format(in_sources[key].location, route.location)
        in_sources[key] = route
    in_spec = {(key.upper(), path) for path, key, _, _ in operations(spec)}
    undocumented = sorted("{} {}  ({})".format(m, p, in_sources[(m, p)].location) for m, p in set(in_sources) - in_spec)
    unserved = sorted("{} {}".format(m, p) for m, p in in_spec - set(in_sources))
    assert not undocumented, "routes missing from {}:\n  ".format(SPEC_PATH.name) + "\n  ".join(undocumented)
    assert not unserved, "documented routes the code does not serve:\n  " + "\n  ".join(unserved)


def test_blob_listener_paths_name_the_blob_server(spec, routes):
    blob_paths = {route.path for route in routes if route.listener == "blob"}
    https_paths = {route.path for route in routes if route.listener == "https"}
    assert blob_paths, "no blob listener routes found in {}".format(BLOB_ROUTE_FILE)
    default_blob_port = re.search(r"blobPort: Int = (\d+)", (SOURCES / "LocalHub.swift").read_text()).group(1)
    # A path missing from the document is reported by the route comparison; skip it here.
    for path in blob_paths & set(spec["paths"]):
        item = spec["paths"][path]
        assert item.get("servers"), "{} is on the blob listener: it needs a path-level `servers`".format(path)
        assert item["servers"][0]["url"] == "https://localhost:" + default_blob_port
        assert all("servers" not in item[key] for key in OPERATION_KEYS if key in item)
    for path in https_paths & set(spec["paths"]):
        item = spec["paths"][path]
        assert "servers" not in item, "{} is on the HTTPS listener: it takes the document's servers".format(path)
        assert all("servers" not in item[key] for key in OPERATION_KEYS if key in item)


def test_document_servers_use_the_default_https_port(spec):
    default_https_port = re.search(r"httpsPort: Int = (\d+)", (SOURCES / "LocalHub.swift").read_text()).group(1)
    assert spec["servers"][0]["url"] == "https://localhost:" + default_https_port


def test_security_matches_the_authorization_each_handler_does(spec, routes):
    expected = {
        "service": [{"serviceSas": []}],
        "device": [{"deviceSas": []}, {"deviceCertificate": []}],
        "blob": [{"blobSas": []}],
        "provisioning": [{"provisioningSas": []}],
        "methodInvocation": [{"serviceSas": []}, {"edgeModuleSas": []}],
        "workload": [],
    }
    for route in routes:
        assert route.authorization, "{} {} ({}) calls no (or more than one) authorize function".format(
            route.method, route.path, route.location)
        operation = spec["paths"].get(route.path, {}).get(route.method.lower())
        if operation is None:
            continue  # reported by the route comparison
        assert operation.get("security", spec["security"]) == expected[route.authorization], "{} {}".format(route.method, route.path)
        # A refused blob SAS is 403 `AuthenticationFailed` (as in Azure Storage); the other
        # schemes answer 401.
        if route.authorization == "workload":
            continue
        refusal = "403" if route.authorization == "blob" else "401"
        assert refusal in operation["responses"], "{} {} authorises but documents no {}".format(route.method, route.path, refusal)


def test_operations_are_described(spec):
    operation_ids = set()
    tag_names = {tag["name"] for tag in spec["tags"]}
    for path, key, item, operation in operations(spec):
        name = "{} {}".format(key.upper(), path)
        summary = operation.get("summary", "")
        assert summary and "\n" not in summary and len(summary) <= 80, name + ": needs a one-line summary"
        assert operation.get("operationId") and operation["operationId"] not in operation_ids, name
        operation_ids.add(operation["operationId"])
        assert operation.get("tags") and set(operation["tags"]) <= tag_names, name
        assert any(code.startswith("2") for code in operation["responses"]), name + ": no success response"
        declared = {parameter.get("$ref", "").rsplit("/", 1)[-1] or parameter["name"]
                    for parameter in item.get("parameters", []) + operation.get("parameters", [])}
        if path in ("/devices", "/twins") or path.startswith(("/devices/", "/twins/")):
            assert "ApiVersion" in declared, name + ": the service and device APIs take api-version"


def test_error_codes_match_service_error(spec):
    source = (SOURCES / "Service" / "ServiceError.swift").read_text(encoding="utf-8")
    codes = {int(code): name for code, name in re.findall(r'\((\d{6}),\s*"(\w+)"\)', source)}
    assert codes, "no error codes found in ServiceError.swift"
    schemas = spec["components"]["schemas"]
    assert set(schemas["ErrorBody"]["properties"]["errorCode"]["enum"]) == set(codes)
    documented = {}
    for name, schema in schemas.items():
        if name.endswith("Error") and "allOf" in schema:
            members = schema["allOf"][1]["properties"]
            code = members["errorCode"]["const"]
            assert members["Message"]["pattern"] == "^ErrorCode:{};".format(codes[code]), name
            documented[code] = name
    assert set(documented) == set(codes), "every error code needs its schema"


def _example_cases(spec):
    for path, key, item, operation in operations(spec):
        bodies = [("request", operation.get("requestBody", {}))]
        bodies += [(status, response) for status, response in operation["responses"].items()]
        for what, holder in bodies:
            if "$ref" in holder:
                holder = _resolve(spec, holder["$ref"])
            for media_type, media in holder.get("content", {}).items():
                examples = [media["example"]] if "example" in media else []
                examples += [example["value"] for example in media.get("examples", {}).values()]
                for example in examples:
                    yield "{} {} {} {}".format(key.upper(), path, what, media_type), media.get("schema", {}), example


def _resolve(spec, reference):
    node = spec
    for part in reference.lstrip("#/").split("/"):
        node = node[part]
    return node


def test_examples_fit_their_schemas(spec):
    registry = Registry().with_resource("urn:localhub", Resource.from_contents(spec, default_specification=DRAFT202012))
    checked = 0
    for name, schema, example in _example_cases(spec):
        errors = sorted(OAS31Validator(_rebased(schema), registry=registry).iter_errors(example), key=str)
        assert not errors, "{}: example does not fit its schema: {}".format(name, errors[0].message)
        checked += 1
    assert checked >= 10


def _rebased(schema):
    """`schema` with its `#/components/…` references made absolute against the document."""
    if isinstance(schema, dict):
        return {key: ("urn:localhub" + value if key == "$ref" and value.startswith("#") else _rebased(value))
                for key, value in schema.items()}
    if isinstance(schema, list):
        return [_rebased(value) for value in schema]
    return schema
