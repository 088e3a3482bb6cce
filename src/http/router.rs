//! Path routing: a segment trie from route patterns to handler values, generic over the handler so
//! it is tested alone. It owns the pattern syntax and the matching rules:
//!
//! - Patterns are `/`-separated segments, each a literal (`v1`, `ownership:claim`), a parameter
//!   (`{server_id}`) or a parameter with a literal suffix (`{id}:archive`, which captures `abc`
//!   from `abc:archive`). `/` alone is the root. Malformed or duplicate patterns panic: routes are
//!   registered at start-up and a bad one is a programmer error.
//! - Matching is on the raw path, segment by segment, trying literals first, then suffixed
//!   parameters (longest suffix first), then plain parameters, and backtracking only when a branch
//!   cannot match the rest of the path. So a registered literal such as `profiles:batch` always
//!   wins over `{uid}` at the same place, whatever the method; the method is checked afterwards,
//!   giving 405 (with the allowed methods, for `Allow`) rather than falling through to a
//!   parameter route.
//! - Strict: a trailing slash is a different path (`/healthz/` does not match `/healthz`), and an
//!   empty segment (`//`) never matches a parameter. Parameter values must percent-decode to
//!   UTF-8, otherwise the segment does not match.
//! - HEAD is served by the GET handler unless a HEAD route exists.
//!
//! Matching allocates nothing: captures live in a fixed array of [`MAX_PATH_PARAMS`] slots.

use std::borrow::Cow;

use super::Method;
use super::limits::MAX_PATH_PARAMS;
use super::query::percent_decode;

/// A set of methods, as the `Allow` header of a 405 needs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MethodSet(u8);

impl MethodSet {
    fn bit(method: Method) -> u8 {
        1 << (Method::ALL.iter().position(|m| *m == method).unwrap_or(0) as u8)
    }

    pub fn insert(&mut self, method: Method) {
        self.0 |= Self::bit(method);
    }

    pub fn contains(self, method: Method) -> bool {
        self.0 & Self::bit(method) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Method> {
        Method::ALL.into_iter().filter(move |m| self.contains(*m))
    }

    /// The value of an `Allow` header, e.g. `GET, HEAD, POST`.
    pub fn allow_header(self) -> String {
        self.iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The parameters captured by a matched route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params<'a> {
    names: [&'static str; MAX_PATH_PARAMS],
    values: [&'a str; MAX_PATH_PARAMS],
    len: usize,
}

impl<'a> Params<'a> {
    /// No parameters (a request that did not come through the router).
    pub fn empty() -> Self {
        Self {
            names: [""; MAX_PATH_PARAMS],
            values: [""; MAX_PATH_PARAMS],
            len: 0,
        }
    }

    /// The percent-decoded value of parameter `name` (borrowed unless it contained escapes).
    pub fn get(&self, name: &str) -> Option<Cow<'a, str>> {
        // Values were checked to decode when matched; the raw fallback is never taken.
        self.get_raw(name)
            .map(|raw| percent_decode(raw).unwrap_or(Cow::Borrowed(raw)))
    }

    /// The value of parameter `name` exactly as it appeared in the path.
    pub fn get_raw(&self, name: &str) -> Option<&'a str> {
        (0..self.len)
            .find(|&i| self.names[i] == name)
            .map(|i| self.values[i])
    }

    /// `(name, raw value)` pairs in pattern order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &'a str)> + '_ {
        (0..self.len).map(|i| (self.names[i], self.values[i]))
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The outcome of routing one request.
#[expect(
    clippy::large_enum_variant,
    reason = "returned once per request by value; boxing Params would allocate on the hot path"
)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteMatch<'r, 'p, H> {
    Found {
        handler: &'r H,
        params: Params<'p>,
    },
    /// The path exists for other methods: answer 405 with `Allow: allowed.allow_header()`.
    MethodNotAllowed {
        allowed: MethodSet,
    },
    NotFound,
}

struct Endpoint<H> {
    method: Method,
    handler: H,
    /// Parameter names of this route in capture order (routes sharing a node may name the same
    /// position differently).
    names: Vec<&'static str>,
}

struct Node<H> {
    literals: Vec<(&'static str, Node<H>)>,
    /// Kept sorted by decreasing suffix length so `{id}:archive-all` is tried before `{id}:all`.
    suffixed: Vec<(&'static str, Node<H>)>,
    param: Option<Box<Node<H>>>,
    endpoints: Vec<Endpoint<H>>,
}

impl<H> Node<H> {
    fn new() -> Self {
        Self {
            literals: Vec::new(),
            suffixed: Vec::new(),
            param: None,
            endpoints: Vec::new(),
        }
    }
}

enum Segment {
    Literal(&'static str),
    Param(&'static str),
    Suffixed(&'static str, &'static str),
}

/// Fixed-size capture stack used while walking the trie.
struct Captures<'p> {
    values: [&'p str; MAX_PATH_PARAMS],
    len: usize,
}

/// A method-indexed path router.
pub struct Router<H> {
    root: Node<H>,
}

impl<H> Default for Router<H> {
    fn default() -> Self {
        Self::new()
    }
}

impl<H> Router<H> {
    pub fn new() -> Self {
        Self { root: Node::new() }
    }

    /// Registers `handler` for `method` on `pattern`.
    ///
    /// # Panics
    /// On a malformed pattern, more than [`MAX_PATH_PARAMS`] parameters, a parameter name used
    /// twice in one pattern, or a (method, pattern shape) already registered.
    pub fn route(&mut self, method: Method, pattern: &'static str, handler: H) -> &mut Self {
        let segments = parse_pattern(pattern);
        let mut names = Vec::new();
        let mut node = &mut self.root;
        for segment in segments {
            node = match segment {
                Segment::Literal(lit) => {
                    let i = match node.literals.iter().position(|(l, _)| *l == lit) {
                        Some(i) => i,
                        None => {
                            node.literals.push((lit, Node::new()));
                            node.literals.len() - 1
                        }
                    };
                    &mut node.literals[i].1
                }
                Segment::Param(name) => {
                    names.push(name);
                    node.param.get_or_insert_with(|| Box::new(Node::new()))
                }
                Segment::Suffixed(name, suffix) => {
                    names.push(name);
                    let i = match node.suffixed.iter().position(|(s, _)| *s == suffix) {
                        Some(i) => i,
                        None => {
                            let at = node
                                .suffixed
                                .partition_point(|(s, _)| s.len() >= suffix.len());
                            node.suffixed.insert(at, (suffix, Node::new()));
                            at
                        }
                    };
                    &mut node.suffixed[i].1
                }
            };
        }
        assert!(
            names.len() <= MAX_PATH_PARAMS,
            "route {pattern:?} has more than {MAX_PATH_PARAMS} parameters"
        );
        for (i, name) in names.iter().enumerate() {
            assert!(
                !names[..i].contains(name),
                "route {pattern:?} repeats parameter {name:?}"
            );
        }
        assert!(
            !node.endpoints.iter().any(|e| e.method == method),
            "duplicate route {} {pattern:?}",
            method.as_str()
        );
        node.endpoints.push(Endpoint {
            method,
            handler,
            names,
        });
        self
    }

    /// Routes a raw path (as returned by `Request::path`, without the query).
    pub fn find<'r, 'p>(&'r self, method: Method, path: &'p str) -> RouteMatch<'r, 'p, H> {
        let Some(rest) = path.strip_prefix('/') else {
            return RouteMatch::NotFound;
        };
        let mut captures = Captures {
            values: [""; MAX_PATH_PARAMS],
            len: 0,
        };
        let Some(node) = walk(&self.root, rest, &mut captures) else {
            return RouteMatch::NotFound;
        };
        let endpoint =
            node.endpoints
                .iter()
                .find(|e| e.method == method)
                .or_else(|| match method {
                    Method::Head => node.endpoints.iter().find(|e| e.method == Method::Get),
                    _ => None,
                });
        match endpoint {
            Some(endpoint) => {
                let mut params = Params::empty();
                params.len = captures.len;
                params.names[..captures.len].copy_from_slice(&endpoint.names);
                params.values = captures.values;
                RouteMatch::Found {
                    handler: &endpoint.handler,
                    params,
                }
            }
            None => {
                let mut allowed = MethodSet::default();
                for e in &node.endpoints {
                    allowed.insert(e.method);
                    if e.method == Method::Get {
                        allowed.insert(Method::Head);
                    }
                }
                RouteMatch::MethodNotAllowed { allowed }
            }
        }
    }
}

/// Finds the highest-priority node with endpoints that matches `rest` (the path after a `/`).
fn walk<'r, 'p, H>(
    node: &'r Node<H>,
    rest: &'p str,
    captures: &mut Captures<'p>,
) -> Option<&'r Node<H>> {
    let (segment, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let descend = |child: &'r Node<H>, captures: &mut Captures<'p>| match tail {
        None => (!child.endpoints.is_empty()).then_some(child),
        Some(tail) => walk(child, tail, captures),
    };

    if let Some((_, child)) = node.literals.iter().find(|(lit, _)| *lit == segment)
        && let Some(found) = descend(child, captures)
    {
        return Some(found);
    }
    for (suffix, child) in &node.suffixed {
        if let Some(value) = segment.strip_suffix(suffix)
            && is_param_value(value)
            && let Some(found) = capture_and_descend(value, child, captures, &descend)
        {
            return Some(found);
        }
    }
    if let Some(child) = &node.param
        && is_param_value(segment)
    {
        return capture_and_descend(segment, child, captures, &descend);
    }
    None
}

fn capture_and_descend<'r, 'p, H>(
    value: &'p str,
    child: &'r Node<H>,
    captures: &mut Captures<'p>,
    descend: &impl Fn(&'r Node<H>, &mut Captures<'p>) -> Option<&'r Node<H>>,
) -> Option<&'r Node<H>> {
    // Registration caps parameters per route at MAX_PATH_PARAMS, so the trie is never deeper.
    captures.values[captures.len] = value;
    captures.len += 1;
    let found = descend(child, captures);
    if found.is_none() {
        captures.len -= 1;
    }
    found
}

/// A parameter is a non-empty segment that percent-decodes to UTF-8.
fn is_param_value(segment: &str) -> bool {
    !segment.is_empty() && (!segment.contains('%') || percent_decode(segment).is_some())
}

fn parse_pattern(pattern: &'static str) -> Vec<Segment> {
    let Some(rest) = pattern.strip_prefix('/') else {
        panic!("route pattern {pattern:?} must start with '/'");
    };
    if rest.is_empty() {
        return vec![Segment::Literal("")];
    }
    let is_name =
        |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    let is_literal = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~:@!$&'()*+,;=".contains(&b))
    };
    rest.split('/')
        .map(|segment| {
            if let Some(inner) = segment.strip_prefix('{') {
                let Some((name, suffix)) = inner.split_once('}') else {
                    panic!("unclosed parameter in route pattern {pattern:?}");
                };
                assert!(
                    is_name(name),
                    "bad parameter name {name:?} in route pattern {pattern:?}"
                );
                if suffix.is_empty() {
                    Segment::Param(name)
                } else {
                    assert!(
                        suffix.starts_with(':') && suffix.len() > 1 && is_literal(suffix),
                        "bad parameter suffix {suffix:?} in route pattern {pattern:?}"
                    );
                    Segment::Suffixed(name, suffix)
                }
            } else {
                assert!(
                    is_literal(segment),
                    "bad segment {segment:?} in route pattern {pattern:?}"
                );
                Segment::Literal(segment)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router<&'static str> {
        let mut r = Router::new();
        r.route(Method::Get, "/", "root")
            .route(Method::Get, "/healthz", "health")
            .route(Method::Get, "/v1/servers", "list_servers")
            .route(Method::Post, "/v1/servers", "create_server")
            .route(
                Method::Post,
                "/v1/servers/{server_id}/ownership:claim",
                "claim",
            )
            .route(
                Method::Get,
                "/v1/servers/{server_id}/settings",
                "get_settings",
            )
            .route(
                Method::Put,
                "/v1/servers/{server_id}/settings",
                "put_settings",
            )
            .route(Method::Post, "/v1/profiles:batch", "profiles_batch")
            .route(Method::Get, "/v1/profiles/{uid}", "profile")
            .route(Method::Get, "/v1/{section}", "section")
            .route(
                Method::Get,
                "/v1/channels/{channel_id}/messages",
                "messages",
            )
            .route(
                Method::Get,
                "/v1/channels/{channel_id}/messages/{message_id}",
                "message",
            )
            .route(
                Method::Delete,
                "/v1/channels/{channel_id}/messages/{message_id}",
                "delete_message",
            )
            .route(Method::Post, "/v1/items/{id}:archive", "archive")
            .route(Method::Post, "/v1/items/{id}:unarchive", "unarchive")
            .route(Method::Get, "/v1/items/{id}", "item")
            .route(Method::Head, "/v1/blobs/{id}", "blob_head")
            .route(Method::Get, "/v1/blobs/{id}", "blob_get");
        r
    }

    fn found(
        r: &Router<&'static str>,
        method: Method,
        path: &str,
    ) -> (&'static str, Vec<(&'static str, String)>) {
        match r.find(method, path) {
            RouteMatch::Found { handler, params } => (
                *handler,
                params
                    .iter()
                    .map(|(n, _)| (n, params.get(n).unwrap().into_owned()))
                    .collect(),
            ),
            other => panic!("{method:?} {path}: {other:?}"),
        }
    }

    #[test]
    fn literal_and_param_routes() {
        let r = router();
        assert_eq!(found(&r, Method::Get, "/").0, "root");
        assert_eq!(found(&r, Method::Get, "/healthz").0, "health");
        assert_eq!(
            found(&r, Method::Post, "/v1/servers/srv_1/ownership:claim"),
            ("claim", vec![("server_id", "srv_1".to_string())])
        );
        assert_eq!(
            found(&r, Method::Get, "/v1/channels/c9/messages/m42"),
            (
                "message",
                vec![
                    ("channel_id", "c9".to_string()),
                    ("message_id", "m42".to_string())
                ]
            )
        );
        assert_eq!(
            found(&r, Method::Get, "/v1/channels/c9/messages").0,
            "messages"
        );
    }

    #[test]
    fn literals_win_over_params() {
        let r = router();
        assert_eq!(
            found(&r, Method::Post, "/v1/profiles:batch").0,
            "profiles_batch"
        );
        assert_eq!(
            found(&r, Method::Get, "/v1/profiles/uid_12345678"),
            ("profile", vec![("uid", "uid_12345678".into())])
        );
        assert_eq!(found(&r, Method::Get, "/v1/servers").0, "list_servers");
        assert_eq!(
            found(&r, Method::Get, "/v1/other"),
            ("section", vec![("section", "other".into())])
        );
        // The literal owns the segment: GET on it is a 405, not the `{section}` route.
        assert_eq!(
            r.find(Method::Get, "/v1/profiles:batch"),
            RouteMatch::MethodNotAllowed {
                allowed: {
                    let mut s = MethodSet::default();
                    s.insert(Method::Post);
                    s
                }
            }
        );
    }

    #[test]
    fn backtracks_when_a_literal_branch_cannot_match_the_rest() {
        // `/v1/servers/...` is a literal branch, but `/v1/servers` has no such child: the
        // `{section}` route does not apply either (different depth), so 404.
        let r = router();
        assert_eq!(
            r.find(Method::Get, "/v1/servers/x/unknown"),
            RouteMatch::NotFound
        );
        let mut r = Router::new();
        r.route(Method::Get, "/a/b/c", 1)
            .route(Method::Get, "/a/{x}/d", 2);
        assert!(matches!(
            r.find(Method::Get, "/a/b/d"),
            RouteMatch::Found { handler: 2, .. }
        ));
        assert!(matches!(
            r.find(Method::Get, "/a/b/c"),
            RouteMatch::Found { handler: 1, .. }
        ));
    }

    #[test]
    fn suffixed_params() {
        let r = router();
        assert_eq!(
            found(&r, Method::Post, "/v1/items/abc:archive"),
            ("archive", vec![("id", "abc".into())])
        );
        assert_eq!(
            found(&r, Method::Post, "/v1/items/abc:unarchive"),
            ("unarchive", vec![("id", "abc".into())])
        );
        assert_eq!(
            found(&r, Method::Get, "/v1/items/abc"),
            ("item", vec![("id", "abc".into())])
        );
        // Nothing before the suffix: not a suffixed match; the plain param takes the segment.
        assert_eq!(
            found(&r, Method::Get, "/v1/items/:archive"),
            ("item", vec![("id", ":archive".into())])
        );
        let mut set = MethodSet::default();
        set.insert(Method::Post);
        assert_eq!(
            r.find(Method::Get, "/v1/items/abc:archive"),
            RouteMatch::MethodNotAllowed { allowed: set }
        );
    }

    #[test]
    fn not_found_vs_method_not_allowed() {
        let r = router();
        assert_eq!(r.find(Method::Get, "/nope"), RouteMatch::NotFound);
        assert_eq!(
            r.find(Method::Get, "/v1/channels/c/messages/m/extra"),
            RouteMatch::NotFound
        );
        match r.find(Method::Post, "/v1/servers/s/settings") {
            RouteMatch::MethodNotAllowed { allowed } => {
                assert_eq!(allowed.allow_header(), "GET, HEAD, PUT")
            }
            other => panic!("{other:?}"),
        }
        match r.find(Method::Patch, "/v1/channels/c/messages/m") {
            RouteMatch::MethodNotAllowed { allowed } => {
                assert_eq!(
                    allowed.iter().collect::<Vec<_>>(),
                    [Method::Get, Method::Head, Method::Delete]
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(r.find(Method::Get, "*"), RouteMatch::NotFound);
        assert_eq!(r.find(Method::Get, ""), RouteMatch::NotFound);
    }

    #[test]
    fn head_uses_get_unless_head_is_routed() {
        let r = router();
        assert_eq!(found(&r, Method::Head, "/healthz").0, "health");
        assert_eq!(found(&r, Method::Head, "/v1/blobs/b1").0, "blob_head");
        assert_eq!(found(&r, Method::Get, "/v1/blobs/b1").0, "blob_get");
    }

    #[test]
    fn strict_slashes_and_empty_segments() {
        let r = router();
        assert_eq!(r.find(Method::Get, "/healthz/"), RouteMatch::NotFound);
        assert_eq!(r.find(Method::Get, "//healthz"), RouteMatch::NotFound);
        assert_eq!(r.find(Method::Get, "/v1/profiles/"), RouteMatch::NotFound);
        assert_eq!(
            r.find(Method::Get, "/v1/channels//messages"),
            RouteMatch::NotFound
        );
        assert_eq!(r.find(Method::Get, "/v1/"), RouteMatch::NotFound);
    }

    #[test]
    fn params_are_percent_decoded_and_must_be_utf8() {
        let r = router();
        match r.find(Method::Get, "/v1/profiles/a%20b%2Fc") {
            RouteMatch::Found { params, .. } => {
                assert_eq!(params.get("uid").as_deref(), Some("a b/c"));
                assert_eq!(params.get_raw("uid"), Some("a%20b%2Fc"));
                assert_eq!(params.get("nope"), None);
                assert_eq!(params.len(), 1);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            r.find(Method::Get, "/v1/profiles/%FF"),
            RouteMatch::NotFound
        );
        assert_eq!(
            r.find(Method::Get, "/v1/profiles/%zz"),
            RouteMatch::NotFound
        );
        match r.find(Method::Get, "/v1/profiles/plain") {
            RouteMatch::Found { params, .. } => {
                assert!(matches!(params.get("uid"), Some(Cow::Borrowed("plain"))))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn different_param_names_on_a_shared_node() {
        let mut r = Router::new();
        r.route(Method::Get, "/a/{id}", 1)
            .route(Method::Delete, "/a/{uid}", 2);
        match r.find(Method::Delete, "/a/x") {
            RouteMatch::Found { handler: 2, params } => {
                assert_eq!(params.get_raw("uid"), Some("x"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn max_params_fit() {
        let mut r = Router::new();
        r.route(Method::Get, "/{a}/{b}/{c}/{d}/{e}/{f}/{g}/{h}", ());
        match r.find(Method::Get, "/1/2/3/4/5/6/7/8") {
            RouteMatch::Found { params, .. } => assert_eq!(params.get_raw("h"), Some("8")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    #[should_panic(expected = "duplicate route")]
    fn duplicate_routes_panic() {
        let mut r = Router::new();
        r.route(Method::Get, "/a/{x}", ())
            .route(Method::Get, "/a/{y}", ());
    }

    #[test]
    fn malformed_patterns_panic() {
        for bad in [
            "",
            "a",
            "/a/",
            "//a",
            "/{",
            "/{}",
            "/{a",
            "/{a}b",
            "/{a}:",
            "/a{b}",
            "/{a}/{a}",
            "/a b",
            "/{a}/{b}/{c}/{d}/{e}/{f}/{g}/{h}/{i}",
        ] {
            let result = std::panic::catch_unwind(|| {
                Router::new().route(Method::Get, bad, ());
            });
            assert!(result.is_err(), "{bad:?} should panic");
        }
    }
}
