//! Headless Chromium for the tests that look at a node's pages as a person would.
//!
//! `scripts/test.sh` installs Debian's `chromium` and sets `DPOW_REQUIRE_CHROMIUM=1`, so in CI
//! a missing browser fails a test instead of skipping it.

use anyhow::bail;

/// Where Debian installs the browser.
const CANDIDATES: [&str; 2] = ["/usr/bin/chromium", "/usr/bin/chromium-browser"];

/// The browser to run: `Ok(None)` when there is none and none is required (the test then
/// skips itself), an error when `DPOW_REQUIRE_CHROMIUM` is set and there is none.
pub fn chromium() -> anyhow::Result<Option<&'static str>> {
    let found = CANDIDATES
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    if found.is_none() && std::env::var_os("DPOW_REQUIRE_CHROMIUM").is_some() {
        bail!("DPOW_REQUIRE_CHROMIUM is set but no chromium is installed");
    }
    Ok(found)
}

/// The text of the element with `id` in a dumped DOM (up to its first child or its end), or
/// `None` when the page has no such element.
pub fn element(dom: &str, id: &str) -> Option<String> {
    let start = dom.find(&format!("id=\"{id}\""))?;
    let rest = &dom[start..];
    let rest = &rest[rest.find('>')? + 1..];
    Some(rest[..rest.find('<').unwrap_or(rest.len())].to_string())
}

#[cfg(test)]
mod tests {
    use super::element;

    #[test]
    fn element_text_is_found_by_id() {
        let dom = r#"<div><span class="x" id="a">12</span><b id="b"></b></div>"#;
        assert_eq!(element(dom, "a").as_deref(), Some("12"));
        assert_eq!(element(dom, "b").as_deref(), Some(""));
        assert_eq!(element(dom, "c"), None);
    }
}
