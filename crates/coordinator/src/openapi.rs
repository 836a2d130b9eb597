//! The OpenAPI 3.1 document at `GET /api/v1/openapi.json`, written from the operations it is
//! given: `routes` gives it every route it serves, so the document cannot forget one.

use crate::auth::Access;
use pxs_protocol::api::{EndReason, SessionState};
use serde_json::{Map, Value, json};

/// One path and method, as the document describes it.
pub struct Operation<'a> {
    /// Lower case: `get`, `post`, …
    pub method: &'a str,
    /// The router's syntax: `{id}` a segment, `{*path}` the rest.
    pub path: &'a str,
    pub access: Access,
    /// A web page or its file (HTML, scripts), not JSON.
    pub page: bool,
    pub summary: &'a str,
}

pub fn document<'a>(operations: impl IntoIterator<Item = Operation<'a>>) -> Value {
    let mut paths = Map::new();
    for op in operations {
        let Operation {
            method,
            access,
            page,
            summary,
            ..
        } = op;
        // OpenAPI has no "rest of the path" parameter: `{*path}` is written `{path}`.
        let path = op.path.replace("{*", "{");
        let path = path.as_str();
        let entry = paths
            .entry(path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        let responses = if page {
            json!({"200": {"description": "the page or file", "content": {"text/html": {}}}, "404": {"description": "no such file"}})
        } else {
            responses(method, path)
        };
        let mut op = json!({
            "summary": summary,
            "responses": responses,
        });
        match access {
            Access::Public => {}
            Access::Anyone => {
                op["security"] = json!([{}, {"bearer": []}]);
            }
            Access::User => {
                op["security"] = json!([{"bearer": ["user"]}]);
            }
            Access::Admin => {
                op["security"] = json!([{"bearer": ["admin"]}]);
            }
        }
        let params: Vec<Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let mut params = params;
        params.extend(query_parameters(method, path));
        if !params.is_empty() {
            op["parameters"] = Value::Array(params);
        }
        if let Some(schema) = request_schema(method, path) {
            op["requestBody"] = json!({
                // A drain without a deadline may leave its body out.
                "required": schema != "NodeDrain",
                "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}
            });
        }
        if let Value::Object(m) = entry {
            m.insert(method.to_owned(), op);
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "pxs coordinator",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Titles, nodes and sessions of a pxs deployment. Times are RFC 3339 \
                (UTC), durations whole seconds. Errors: {\"error\": {\"code\", \"message\"}}."
        },
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas(),
        }
    })
}

/// The query parameters an operation reads.
fn query_parameters(method: &str, path: &str) -> Vec<Value> {
    let q = |name: &str, description: &str, schema: Value| json!({"name": name, "in": "query", "required": false, "description": description, "schema": schema});
    match (method, path) {
        ("get", "/api/v1/sessions") => {
            let mut reasons: Vec<Value> =
                EndReason::ALL.iter().map(|r| json!(r.as_str())).collect();
            reasons.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
            vec![
                q(
                    "state",
                    "only sessions in this state",
                    json!({"type": "string", "enum": SessionState::ALL.map(SessionState::as_str)}),
                ),
                q(
                    "title_id",
                    "only sessions of this title",
                    json!({"type": "string"}),
                ),
                q(
                    "node_id",
                    "only sessions placed on this node",
                    json!({"type": "string"}),
                ),
                q(
                    "end_reason",
                    "only sessions that ended for this reason",
                    json!({"type": "string", "enum": reasons}),
                ),
                q(
                    "limit",
                    "at most this many, newest first (default 500)",
                    json!({"type": "integer", "minimum": 1, "maximum": 1000}),
                ),
            ]
        }
        ("get", "/api/v1/sessions/{id}") => vec![q(
            "name",
            "the display name the join URL carries (1 to 40 characters)",
            json!({"type": "string"}),
        )],
        _ => Vec::new(),
    }
}

fn request_schema(method: &str, path: &str) -> Option<&'static str> {
    match (method, path) {
        ("post", "/api/v1/titles") => Some("NewTitle"),
        ("patch", "/api/v1/titles/{id}") => Some("TitlePatch"),
        ("post", "/api/v1/sessions") => Some("NewSession"),
        ("post", "/api/v1/node-tokens") => Some("NewNodeToken"),
        ("post", "/api/v1/tokens") => Some("NewApiToken"),
        ("post", "/api/v1/nodes/{id}/drain") => Some("NodeDrain"),
        ("post", "/api/v1/sessions/{id}/links") => Some("NewLink"),
        _ => None,
    }
}

fn responses(method: &str, path: &str) -> Value {
    let ok = match (method, path) {
        ("post", "/api/v1/sessions/{id}/links") => json!({"201": body("CreatedLink")}),
        ("get", "/api/v1/sessions/{id}/links") => json!({"200": body("LinkList")}),
        ("delete", "/api/v1/sessions/{id}/links/{link_id}") => {
            json!({"204": {"description": "revoked"}})
        }
        ("post", "/api/v1/titles") => json!({"201": body("Title")}),
        ("post", "/api/v1/sessions") => json!({"201": body("Session")}),
        ("post", p) if p.ends_with("-tokens") || p.ends_with("/tokens") => {
            json!({"201": body("CreatedToken")})
        }
        ("delete", "/api/v1/titles/{id}") => json!({"204": {"description": "deleted"}}),
        ("delete", p) if p.contains("tokens/") => json!({"204": {"description": "revoked"}}),
        ("get", p) if p.ends_with("tokens") => json!({"200": body("TokenList")}),
        ("delete", _) => json!({"200": body("Session"), "202": body("Session")}),
        (_, p) if p.ends_with("/events") => {
            json!({"200": {"description": "text/event-stream of `session` (and `node`) events"}})
        }
        (_, "/api/v1/titles") => json!({"200": body("TitleList")}),
        (_, p) if p.starts_with("/api/v1/titles/") => json!({"200": body("Title")}),
        (_, "/api/v1/sessions") => json!({"200": body("SessionList")}),
        (_, p) if p.starts_with("/api/v1/sessions/") => json!({"200": body("Session")}),
        (_, "/api/v1/nodes") => json!({"200": body("NodeList")}),
        (_, "/api/v1/metrics") => json!({"200": body("Metrics")}),
        (_, "/api/v1/nodes/link") => json!({"101": {"description": "WebSocket"}}),
        (_, p) if p.starts_with("/api/v1/nodes/") => json!({"200": body("Node")}),
        _ => json!({"200": {"description": "OK"}}),
    };
    let mut r = ok;
    r["default"] = body("Error");
    r
}

fn body(schema: &str) -> Value {
    json!({
        "description": schema,
        "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}
    })
}

fn obj(required: &[&str], props: Value) -> Value {
    json!({"type": "object", "required": required, "properties": props})
}

fn list(item: &str) -> Value {
    obj(
        &["items"],
        json!({"items": {"type": "array", "items": {"$ref": format!("#/components/schemas/{item}")}}}),
    )
}

fn schemas() -> Value {
    let s = json!({"type": "string"});
    let ns = json!({"type": ["string", "null"]});
    let n = json!({"type": "integer", "minimum": 0});
    let nn = json!({"type": ["integer", "null"], "minimum": 0});
    let states = json!({"type": "string", "enum": SessionState::ALL.map(SessionState::as_str)});
    let mut reasons: Vec<Value> = EndReason::ALL.iter().map(|r| json!(r.as_str())).collect();
    reasons.push(Value::Null);
    let end_reason = json!({"type": ["string", "null"], "enum": reasons});
    json!({
        "Error": obj(&["error"], json!({"error": obj(&["code", "message"], json!({"code": s, "message": s}))})),
        "Availability": obj(&["free_slots", "nodes", "queued"], json!({"free_slots": n, "nodes": n, "queued": n})),
        "Title": obj(&["id", "name", "application_id", "visibility", "availability"], json!({
            "id": s, "name": s, "description": s, "image_url": ns, "application_id": s,
            "visibility": {"type": "string", "enum": ["public", "private"]},
            "max_players": n, "idle_timeout": n, "empty_timeout": n, "max_duration": n,
            "availability": {"$ref": "#/components/schemas/Availability"},
            "source": {"type": "string", "enum": ["admin", "node"]}, "approved": {"type": "boolean"},
            "created_at": s, "updated_at": s
        })),
        "TitleList": list("Title"),
        "NewTitle": obj(&["name", "application_id"], json!({
            "id": s, "name": s, "description": s, "image_url": s, "application_id": s,
            "visibility": {"type": "string", "enum": ["public", "private"]},
            "max_players": n, "idle_timeout": n, "empty_timeout": n, "max_duration": n
        })),
        "TitlePatch": obj(&[], json!({
            "name": s, "description": s, "image_url": s, "application_id": s,
            "visibility": {"type": "string", "enum": ["public", "private"]},
            "max_players": n, "idle_timeout": n, "empty_timeout": n, "max_duration": n
        })),
        "Session": obj(&["id", "title_id", "state", "created_at"], json!({
            "id": s, "title_id": s, "node_id": ns, "state": states, "queue_position": nn,
            "created_at": s, "start_at": ns, "duration": nn, "ready_at": ns, "ended_at": ns,
            "end_reason": end_reason, "exit_code": {"type": ["integer", "null"]}, "join_url": ns,
            "role": {"type": ["string", "null"], "enum": ["owner", "controller", "viewer", null]},
            "ended_by": {"type": ["string", "null"], "enum": ["owner", "admin", null]},
            "owner_key": s,
            "owner": {"type": "string", "description": "admins' lists: the creator's token id, or `anonymous`"},
            "players": {"type": "integer", "minimum": 0, "description": "admins' lists, when known: players connected now"},
            "estimated_wait_s": {"type": "integer", "minimum": 0, "description": "queued, when it can be guessed: about how many seconds until it starts"},
            "queue_reason": {"type": "string", "enum": ["slot", "address_limit"], "description": "queued: what it waits for, a free slot or its anonymous address's limit"},
            "address_limit": {"type": "integer", "minimum": 0, "description": "with queue_reason address_limit: the sessions an anonymous address may run at once"}
        })),
        "SessionList": list("Session"),
        "NewSession": obj(&["title_id"], json!({"title_id": s, "start_at": s, "duration": {"type": "integer", "minimum": 1}})),
        "Node": obj(&["id", "state"], json!({
            "id": s, "state": {"type": "string", "enum": ["online", "offline", "draining", "drained"]},
            "version": s, "public_url": s, "upstream_url": ns, "max_sessions": n,
            "max_sessions_per_gpu": n, "sessions": n, "reserved": n, "free_slots": n,
            "applications": {"type": "array", "items": s}, "gpus": {"type": "array"},
            "last_heartbeat": ns, "drain_deadline": s
        })),
        "NodeDrain": obj(&[], json!({
            "deadline": {"oneOf": [{"type": "integer", "minimum": 0}, {"type": "string", "format": "date-time"}]}
        })),
        "NodeList": list("Node"),
        "NewLink": obj(&["role"], json!({
            "role": {"type": "string", "enum": ["viewer", "controller"]},
            "expires_in": {"type": "integer", "minimum": 60, "maximum": 2_592_000}
        })),
        "Link": obj(&["id", "role", "created_at"], json!({
            "id": s, "role": {"type": "string", "enum": ["viewer", "controller"]},
            "created_at": s, "expires_at": ns, "revoked_at": ns
        })),
        "LinkList": list("Link"),
        "CreatedLink": obj(&["id", "role", "created_at", "url"], json!({
            "id": s, "role": {"type": "string", "enum": ["viewer", "controller"]},
            "created_at": s, "expires_at": ns, "url": s, "join_url": ns
        })),
        "NewNodeToken": obj(&["name"], json!({"name": s, "node": s})),
        "NewApiToken": obj(&["name", "role"], json!({"name": s, "role": {"type": "string", "enum": ["user", "admin"]}})),
        "TokenInfo": obj(&["id", "name", "created_at"], json!({"id": s, "name": s, "role": s, "node": s, "created_at": s})),
        "TokenList": list("TokenInfo"),
        "SecondsSummary": obj(&["count", "sum"], json!({"count": n, "sum": {"type": "number", "minimum": 0}})),
        "Metrics": obj(&["at", "sessions", "nodes", "queue_length", "node_links", "session_start_seconds", "placement_seconds"], json!({
            "at": s,
            "sessions": {"type": "object", "additionalProperties": n, "description": "sessions by state"},
            "nodes": {"type": "object", "additionalProperties": n, "description": "nodes by state"},
            "queue_length": n, "node_links": n,
            "session_start_seconds": {"$ref": "#/components/schemas/SecondsSummary"},
            "placement_seconds": {"$ref": "#/components/schemas/SecondsSummary"}
        })),
        "CreatedToken": obj(&["id", "name", "token"], json!({"id": s, "name": s, "token": s, "role": s, "node": s})),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(method: &'static str, path: &'static str, access: Access) -> Operation<'static> {
        Operation {
            method,
            path,
            access,
            page: false,
            summary: "s",
        }
    }

    #[test]
    fn operations_are_documented_with_their_security_and_parameters() {
        let doc = document([
            op("get", "/api/v1/titles/{id}", Access::Anyone),
            op("delete", "/api/v1/titles/{id}", Access::Admin),
            op("get", "/healthz", Access::Public),
            op("get", "/assets/{*path}", Access::Public),
        ]);
        let paths = doc["paths"].as_object().unwrap();
        assert_eq!(paths.len(), 3, "{paths:?}");
        let get = &doc["paths"]["/api/v1/titles/{id}"]["get"];
        assert_eq!(get["security"], json!([{}, {"bearer": []}]));
        assert_eq!(get["parameters"][0]["name"], "id");
        let delete = &doc["paths"]["/api/v1/titles/{id}"]["delete"];
        assert_eq!(delete["security"], json!([{"bearer": ["admin"]}]));
        assert!(doc["paths"]["/healthz"]["get"].get("security").is_none());
        assert_eq!(
            doc["paths"]["/assets/{path}"]["get"]["parameters"][0]["name"],
            "path"
        );
    }
}
