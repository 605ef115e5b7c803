//! The admin API's OpenAPI document (`docs/admin-api.openapi.json`) against the running
//! implementation: every documented operation answers, with a documented status, a body that fits
//! the documented schema, and the documented authentication.

mod support;

use serde_json::{json, Value};
use support::{Gateway, Upstream};

const CONFIG: &str = r#"
[gateway]
http_listen = "{http}"
base_domains = ["yourapp.test"]

[admin]
listen = "{admin}"
token_env = "TENANTGATE_TEST_ADMIN_TOKEN"

[pools.shared]
upstreams = ["{shared}"]

[pools.acme-dedicated]
upstreams = ["{dedicated}"]

[tenants.acme]
pool = "shared"

[hosts."api.yourapp.test"]
tenant_source = "claim"
"#;

fn document() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/admin-api.openapi.json"
    ))
    .expect("the OpenAPI document");
    serde_json::from_str(&text).expect("the OpenAPI document is JSON")
}

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => {
            let path = r.trim_start_matches("#/");
            path.split('/').fold(doc, |node, part| &node[part])
        }
        None => schema,
    }
}

/// A small JSON Schema check: type, required, properties, additionalProperties: false, items,
/// enum, oneOf/anyOf. Returns what does not fit, with its place.
fn check(doc: &Value, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    let schema = resolve(doc, schema);
    for key in ["oneOf", "anyOf"] {
        if let Some(options) = schema[key].as_array() {
            let fits = options.iter().any(|o| {
                let mut e = Vec::new();
                check(doc, o, value, at, &mut e);
                e.is_empty()
            });
            if !fits {
                errors.push(format!("{at}: fits none of {key}: {value}"));
            }
        }
    }
    let type_ok = |t: &str| match t {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        _ => true,
    };
    let fits_type = match &schema["type"] {
        Value::String(t) => type_ok(t),
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).any(type_ok),
        _ => true,
    };
    if !fits_type {
        errors.push(format!("{at}: {value} is not of type {}", schema["type"]));
        return;
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(value) {
            errors.push(format!("{at}: {value} is not one of {allowed:?}"));
        }
    }
    if let Some(object) = value.as_object() {
        for required in schema["required"].as_array().into_iter().flatten() {
            let name = required.as_str().unwrap_or_default();
            if !object.contains_key(name) {
                errors.push(format!("{at}: missing {name}"));
            }
        }
        for (key, v) in object {
            match schema["properties"].get(key) {
                Some(s) => check(doc, s, v, &format!("{at}.{key}"), errors),
                None if schema["additionalProperties"] == json!(false) => {
                    errors.push(format!("{at}: {key} is not documented"))
                }
                None => {}
            }
        }
    }
    if let (Some(items), Some(list)) = (schema.get("items"), value.as_array()) {
        for (i, v) in list.iter().enumerate() {
            check(doc, items, v, &format!("{at}[{i}]"), errors);
        }
    }
}

#[tokio::test]
async fn every_documented_operation_answers_as_documented() {
    let doc = document();
    // The checker itself refuses what does not fit.
    let mut errors = Vec::new();
    let status_schema = json!({"$ref": "#/components/schemas/Status"});
    check(
        &doc,
        &status_schema,
        &json!({"version": 1}),
        "body",
        &mut errors,
    );
    assert!(errors.len() > 5, "{errors:?}");
    let shared = Upstream::start("shared").await;
    let dedicated = Upstream::start("dedicated").await;
    let gw = Gateway::start(CONFIG, &[&shared, &dedicated]).await;
    let base = format!("http://{}", gw.admin);

    // Calls in an order that works: promote before rollback, suspend before activate. The push
    // (`POST /tenants`) is a dry run, so the tenants the later calls see are the config's.
    let order = [
        "/healthz",
        "/metrics",
        "/status",
        "/config",
        "/tenants",
        "/tenants/{id}",
        "/tenants/{id}/export",
        "/pools/health",
        "/reload",
        "/tenants/{id}/promote",
        "/tenants/{id}/rollback",
        "/tenants/{id}/suspend",
        "/tenants/{id}/maintenance",
        "/tenants/{id}/activate",
        "/tenants/{id}/keys",
        "/tenants/{id}/keys/{key}/revoke",
        "/export",
        "/audit",
        "/apply",
        "/certs",
        "/certs/{name}/renew",
    ];
    let paths = doc["paths"].as_object().expect("paths");
    let mut documented: Vec<&str> = paths.keys().map(String::as_str).collect();
    documented.sort_unstable();
    let mut expected = order.to_vec();
    expected.sort_unstable();
    assert_eq!(
        documented, expected,
        "the document and this test list the same paths"
    );

    let mut operations = 0;
    for path in order {
        for (method, op) in paths[path].as_object().expect("operations") {
            let Ok(m) = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()) else {
                continue;
            };
            if !matches!(method.as_str(), "get" | "head" | "post") {
                continue;
            }
            operations += 1;
            let url = format!(
                "{base}{}",
                path.replace("{id}", "acme")
                    .replace("{key}", "k-openapi")
                    .replace("{name}", "shop.acme.test")
            );
            let mut request = gw.client.request(m.clone(), &url);
            if path.ends_with("/promote") {
                request = request.json(&json!({"pool": "acme-dedicated"}));
            } else if path == "/tenants/{id}/keys" {
                request = request.json(&json!({
                    "id": "k-openapi",
                    "sha256": "ab".repeat(32),
                    "created": "2026-12-01T00:00:00Z",
                }));
            } else if path == "/apply" {
                request = request.json(&json!({ "config": CONFIG, "dry_run": true }));
            } else if path == "/tenants" && method == "post" {
                // A dry run: the plan and the changes, nothing written.
                request = request.json(&json!({
                    "fragment": "[tenants.newco]\npool = \"shared\"\n",
                    "source": "newco.toml",
                    "dry_run": true,
                }));
            }
            let open = op["security"] == json!([])
                || op["security"]
                    .as_array()
                    .is_some_and(|s| s.contains(&json!({})));
            // Without the token: 401 where the document says the token is needed.
            let anonymous = gw
                .client
                .request(m.clone(), &url)
                .send()
                .await
                .expect("request");
            let status = anonymous.status().as_u16();
            if open {
                assert_ne!(status, 401, "{method} {path} is documented as open");
            } else {
                assert_eq!(status, 401, "{method} {path} needs the token");
                assert!(
                    op["responses"]["401"].is_object(),
                    "{method} {path}: 401 not documented"
                );
            }

            let response = request
                .bearer_auth(support::ADMIN_TOKEN)
                .send()
                .await
                .expect("request");
            let status = response.status().as_u16().to_string();
            let content_type = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let body = response.text().await.expect("body");
            let documented = &op["responses"][&status];
            assert!(
                documented.is_object(),
                "{method} {path} answered {status}, which is not documented: {body}"
            );
            // This gateway keeps its table in its file (apply is for a fleet's store) and has no
            // [acme] (renew is for its names).
            let expected = match path {
                "/apply" | "/certs/{name}/renew" => "409",
                _ => "200",
            };
            assert_eq!(status, expected, "{method} {path}: {body}");
            if method == "head" {
                continue;
            }
            let documented = resolve(&doc, documented);
            let media = &documented["content"][&content_type];
            assert!(
                media.is_object(),
                "{method} {path}: content type {content_type} is not documented"
            );
            if content_type == "application/json" {
                let value: Value = serde_json::from_str(&body).expect("JSON body");
                let mut errors = Vec::new();
                check(&doc, &media["schema"], &value, "body", &mut errors);
                assert!(
                    errors.is_empty(),
                    "{method} {path}:\n{}\n{value:#}",
                    errors.join("\n")
                );
            }
        }
    }
    assert!(operations >= 30, "{operations} operations checked");

    // Undocumented methods and paths get the documented generic answers.
    let wrong_method = gw
        .client
        .delete(format!("{base}/status"))
        .bearer_auth(support::ADMIN_TOKEN)
        .send()
        .await
        .expect("request");
    assert_eq!(wrong_method.status(), 405);
    let missing = gw
        .client
        .get(format!("{base}/nothing-here"))
        .bearer_auth(support::ADMIN_TOKEN)
        .send()
        .await
        .expect("request");
    assert_eq!(missing.status(), 404);
    let generic = &doc["components"]["responses"];
    assert!(generic["MethodNotAllowed"].is_object() && generic["NotFound"].is_object());
}
