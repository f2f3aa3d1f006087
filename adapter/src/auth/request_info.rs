//! Maps a request's method and path to Kubernetes authorizer attributes.
//!
//! This module owns the translation from our URL space to what a SubjectAccessReview asks about.
//! It follows k8s.io/apiserver's `RequestInfoFactory` (the resource/non-resource split, verb
//! from method, namespace handling) plus the adjustments sigs.k8s.io/custom-metrics-apiserver
//! makes for `custom.metrics.k8s.io`, so that RBAC rules written for other metrics adapters
//! (e.g. `resources: ["pods/*"]` in group `custom.metrics.k8s.io`) mean the same here:
//!
//! | path (after `/apis/custom.metrics.k8s.io/v1beta2`) | verb | resource | subresource | namespace | name |
//! |---|---|---|---|---|---|
//! | `/namespaces/NS/pods/*/METRIC` | list | pods | METRIC | NS | |
//! | `/namespaces/NS/pods/NAME/METRIC` | get | pods | METRIC | NS | NAME |
//! | `/namespaces/NS/deployments.apps/NAME/METRIC` | get | deployments.apps | METRIC | NS | NAME |
//! | `/nodes/NAME/METRIC` | get | nodes | METRIC | | NAME |
//! | `/namespaces/NS/metrics/METRIC` | get | namespaces | METRIC | NS | NS |
//!
//! and `/apis/external.metrics.k8s.io/v1beta1/namespaces/NS/METRIC` is a `list` of resource
//! METRIC in namespace NS. Everything that is not under `/apis/<group>/<version>/<resource>`
//! (discovery, `/openapi/*`, `/metrics`, `/version`) is a non-resource request whose verb is the
//! lower-cased method.
//!
//! It does not decide anything: the authorizer does. It also does not look at the query string,
//! so `?watch=true` is not turned into verb `watch` (the metrics APIs do not support watch).

use axum::http::Method;

use super::{Attributes, NonResourceAttributes, ResourceAttributes};

/// API group of the custom metrics API, whose paths get the custom-metrics-apiserver
/// adjustments.
const CUSTOM_METRICS_GROUP: &str = "custom.metrics.k8s.io";

/// Path prefixes under which requests are resource requests (k8s `APIPrefixes`).
const API_PREFIXES: [&str; 2] = ["api", "apis"];

/// The legacy core-group prefix, which has no group segment (k8s `GrouplessAPIPrefixes`).
const GROUPLESS_API_PREFIX: &str = "api";

/// Verbs that may prefix the resource part of a path (`/apis/g/v/watch/...`).
const SPECIAL_VERBS: [&str; 2] = ["proxy", "watch"];

/// Segments after `namespaces/NS` that are subresources of the namespace object itself rather
/// than resources inside it.
const NAMESPACE_SUBRESOURCES: [&str; 2] = ["status", "finalize"];

/// Returns the authorizer attributes for a request with `method` on `path` (the raw,
/// percent-encoded URI path; `%2A` is decoded to `*` here).
pub fn request_attributes(method: &Method, path: &str) -> Attributes {
    let decoded = percent_decode_lossy(path);
    let non_resource = || {
        Attributes::NonResource(NonResourceAttributes {
            verb: method.as_str().to_ascii_lowercase(),
            path: decoded.clone(),
        })
    };

    let trimmed = decoded.trim_matches('/');
    let segments: Vec<&str> = if trimmed.is_empty() {
        Vec::new()
    } else {
        trimmed.split('/').collect()
    };
    // Slice patterns rather than indexing: this runs on every request's path.
    let after_prefix = match segments.as_slice() {
        [prefix, rest @ ..] if rest.len() >= 2 && API_PREFIXES.contains(prefix) => {
            if *prefix == GROUPLESS_API_PREFIX {
                ("", rest)
            } else {
                match rest {
                    // `/apis/<group>/<version>` with nothing after it is discovery.
                    [group, rest @ ..] if rest.len() >= 2 => (*group, rest),
                    _ => return non_resource(),
                }
            }
        }
        _ => return non_resource(),
    };
    let (group, after_group) = after_prefix;
    let (version, mut rest) = match after_group {
        [version, rest @ ..] => (*version, rest),
        [] => return non_resource(),
    };

    let mut verb = match rest {
        [special, tail @ ..] if !tail.is_empty() && SPECIAL_VERBS.contains(special) => {
            rest = tail;
            (*special).to_owned()
        }
        _ => verb_for_method(method).to_owned(),
    };

    let mut namespace = "";
    if let ["namespaces", ns, tail @ ..] = rest {
        namespace = ns;
        if tail
            .first()
            .is_some_and(|next| !NAMESPACE_SUBRESOURCES.contains(next))
        {
            rest = tail;
        }
    }

    let mut resource = rest.first().copied().unwrap_or_default().to_owned();
    let mut name = rest.get(1).copied().unwrap_or_default();
    let mut subresource = if verb == "proxy" {
        ""
    } else {
        rest.get(2).copied().unwrap_or_default()
    };

    if group == CUSTOM_METRICS_GROUP {
        match rest {
            // `<resource>/*/<metric>` reads the metric for every object matching a selector.
            [_, "*", _] => name = "",
            // `namespaces/NS/metrics/<metric>` describes the namespace object itself.
            ["metrics", metric] if !namespace.is_empty() => {
                subresource = metric;
                name = namespace;
                resource = "namespaces".to_owned();
            }
            _ => {}
        }
    }

    if name.is_empty() && verb == "get" {
        verb = "list".to_owned();
    }
    if name.is_empty() && verb == "delete" {
        verb = "deletecollection".to_owned();
    }

    Attributes::Resource(ResourceAttributes {
        verb,
        group: group.to_owned(),
        version: version.to_owned(),
        resource,
        subresource: subresource.to_owned(),
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    })
}

/// The verb k8s assigns a resource request by HTTP method; empty for methods it does not map.
fn verb_for_method(method: &Method) -> &'static str {
    match *method {
        Method::POST => "create",
        Method::GET | Method::HEAD => "get",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "",
    }
}

/// Decodes `%XX` escapes like Go's `url.PathUnescape`. Returns `None` for a malformed escape
/// or a result that is not UTF-8. `+` is left alone (it is only a space in query strings).
pub(crate) fn percent_decode(input: &str) -> Option<String> {
    if !input.contains('%') {
        return Some(input.to_owned());
    }
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let high = hex_value(*bytes.get(i + 1)?)?;
            let low = hex_value(*bytes.get(i + 2)?)?;
            out.push(high << 4 | low);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Like [`percent_decode`], but keeps the input as it is when it cannot be decoded: the router
/// sees the same undecodable path and will not match it to anything.
fn percent_decode_lossy(input: &str) -> String {
    percent_decode(input).unwrap_or_else(|| input.to_owned())
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(
        verb: &str,
        group: &str,
        version: &str,
        resource: &str,
        subresource: &str,
        namespace: &str,
        name: &str,
    ) -> Attributes {
        Attributes::Resource(ResourceAttributes {
            verb: verb.to_owned(),
            group: group.to_owned(),
            version: version.to_owned(),
            resource: resource.to_owned(),
            subresource: subresource.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
    }

    fn non_resource(verb: &str, path: &str) -> Attributes {
        Attributes::NonResource(NonResourceAttributes {
            verb: verb.to_owned(),
            path: path.to_owned(),
        })
    }

    const CM: &str = "custom.metrics.k8s.io";
    const EM: &str = "external.metrics.k8s.io";

    #[test]
    fn namespaced_selector_read_is_list_without_name() {
        let want = resource("list", CM, "v1beta2", "pods", "ttft_p95", "team-a", "");
        let path = "/apis/custom.metrics.k8s.io/v1beta2/namespaces/team-a/pods/*/ttft_p95";
        assert_eq!(request_attributes(&Method::GET, path), want);
        // What clients actually send: `*` percent-encoded.
        let encoded = "/apis/custom.metrics.k8s.io/v1beta2/namespaces/team-a/pods/%2A/ttft_p95";
        assert_eq!(request_attributes(&Method::GET, encoded), want);
    }

    #[test]
    fn namespaced_named_object_is_get() {
        assert_eq!(
            request_attributes(
                &Method::GET,
                "/apis/custom.metrics.k8s.io/v1beta2/namespaces/team-a/pods/vllm-0/queue_depth"
            ),
            resource(
                "get",
                CM,
                "v1beta2",
                "pods",
                "queue_depth",
                "team-a",
                "vllm-0"
            )
        );
    }

    #[test]
    fn group_qualified_resource_is_kept_as_is() {
        assert_eq!(
            request_attributes(
                &Method::GET,
                "/apis/custom.metrics.k8s.io/v1beta2/namespaces/team-a/deployments.apps/llama/ttft_p95"
            ),
            resource("get", CM, "v1beta2", "deployments.apps", "ttft_p95", "team-a", "llama")
        );
        assert_eq!(
            request_attributes(
                &Method::GET,
                "/apis/custom.metrics.k8s.io/v1beta2/namespaces/team-a/deployments.apps/%2A/ttft_p95"
            ),
            resource("list", CM, "v1beta2", "deployments.apps", "ttft_p95", "team-a", "")
        );
    }

    #[test]
    fn root_scoped_objects_have_no_namespace() {
        assert_eq!(
            request_attributes(
                &Method::GET,
                "/apis/custom.metrics.k8s.io/v1beta2/nodes/gpu-node-1/gpu_utilization"
            ),
            resource(
                "get",
                CM,
                "v1beta2",
                "nodes",
                "gpu_utilization",
                "",
                "gpu-node-1"
            )
        );
        assert_eq!(
            request_attributes(
                &Method::GET,
                "/apis/custom.metrics.k8s.io/v1beta2/nodes/*/gpu_utilization"
            ),
            resource("list", CM, "v1beta2", "nodes", "gpu_utilization", "", "")
        );
    }

    #[test]
    fn namespace_metrics_describe_the_namespace_object() {
        assert_eq!(
            request_attributes(
                &Method::GET,
                "/apis/custom.metrics.k8s.io/v1beta2/namespaces/team-a/metrics/queue_depth"
            ),
            resource(
                "get",
                CM,
                "v1beta2",
                "namespaces",
                "queue_depth",
                "team-a",
                "team-a"
            )
        );
    }

    #[test]
    fn external_metric_is_list_of_metric_resource() {
        assert_eq!(
            request_attributes(
                &Method::GET,
                "/apis/external.metrics.k8s.io/v1beta1/namespaces/team-a/fleet_queue_depth"
            ),
            resource("list", EM, "v1beta1", "fleet_queue_depth", "", "team-a", "")
        );
    }

    #[test]
    fn discovery_and_infrastructure_paths_are_non_resource() {
        for path in [
            "/",
            "/apis",
            "/apis/custom.metrics.k8s.io",
            "/apis/custom.metrics.k8s.io/v1beta2",
            "/apis/external.metrics.k8s.io/v1beta1",
            "/openapi/v2",
            "/openapi/v3",
            "/openapi/v3/apis/custom.metrics.k8s.io/v1beta2",
            "/metrics",
            "/version",
        ] {
            assert_eq!(
                request_attributes(&Method::GET, path),
                non_resource("get", path),
                "{path}"
            );
        }
        assert_eq!(
            request_attributes(&Method::HEAD, "/apis"),
            non_resource("head", "/apis")
        );
    }

    #[test]
    fn write_methods_map_like_kubernetes() {
        let named = "/apis/custom.metrics.k8s.io/v1beta2/namespaces/ns/pods/p/m";
        let collection = "/apis/external.metrics.k8s.io/v1beta1/namespaces/ns/m";
        let verb = |method: Method, path: &str| match request_attributes(&method, path) {
            Attributes::Resource(r) => r.verb,
            Attributes::NonResource(n) => panic!("expected resource, got {n:?}"),
        };
        assert_eq!(verb(Method::POST, collection), "create");
        assert_eq!(verb(Method::PUT, named), "update");
        assert_eq!(verb(Method::PATCH, named), "patch");
        assert_eq!(verb(Method::DELETE, named), "delete");
        assert_eq!(verb(Method::DELETE, collection), "deletecollection");
        assert_eq!(verb(Method::OPTIONS, named), "");
        assert_eq!(
            request_attributes(&Method::POST, "/apis"),
            non_resource("post", "/apis")
        );
    }

    #[test]
    fn core_group_and_watch_prefix_follow_the_generic_factory() {
        assert_eq!(
            request_attributes(&Method::GET, "/api/v1/namespaces/ns/pods/p"),
            resource("get", "", "v1", "pods", "", "ns", "p")
        );
        assert_eq!(
            request_attributes(&Method::GET, "/api/v1/namespaces/ns"),
            resource("get", "", "v1", "namespaces", "", "ns", "ns")
        );
        assert_eq!(
            request_attributes(
                &Method::GET,
                "/apis/apps/v1/watch/namespaces/ns/deployments"
            ),
            resource("watch", "apps", "v1", "deployments", "", "ns", "")
        );
    }

    #[test]
    fn odd_paths_do_not_panic() {
        for path in [
            "",
            "/",
            "//",
            "/api",
            "/api/",
            "/api/v1",
            "/api/v1/",
            "/apis/g",
            "/apis/g/v/",
            "/apis/g/v/watch",
            "/apis/g/v/proxy",
            "/apis/g/v/namespaces",
            "/apis/g/v/namespaces/",
            "/apis/g/v/namespaces/ns",
            "/apis/g/v/namespaces/ns/status",
            "/apis/custom.metrics.k8s.io/v1beta2/namespaces/ns/metrics",
            "/apis/custom.metrics.k8s.io/v1beta2/metrics/m",
            "/apis/custom.metrics.k8s.io/v1beta2/*/*/*/*/*",
            "%",
            "/%2",
            "/apis/%zz/v/x",
        ] {
            let _ = request_attributes(&Method::GET, path);
            let _ = request_attributes(&Method::DELETE, path);
        }
        // Root-scoped `metrics/<m>` has no namespace: not the namespace-metric shape.
        assert_eq!(
            request_attributes(
                &Method::GET,
                "/apis/custom.metrics.k8s.io/v1beta2/metrics/m"
            ),
            resource("get", CM, "v1beta2", "metrics", "", "", "m")
        );
        assert_eq!(
            request_attributes(&Method::GET, "/apis/g/v/namespaces/ns/status"),
            resource("get", "g", "v", "namespaces", "status", "ns", "ns")
        );
    }

    #[test]
    fn percent_decoding_matches_go_path_unescape() {
        assert_eq!(percent_decode("a%2Ab").as_deref(), Some("a*b"));
        assert_eq!(percent_decode("a+b").as_deref(), Some("a+b"));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%2"), None);
        assert_eq!(percent_decode("%FF"), None, "not UTF-8");
        assert_eq!(percent_decode("%C3%A9").as_deref(), Some("é"));
    }
}
