//! The status page (`GET /status`): server-rendered HTML an operator reads
//! at a glance. No script: the page reloads itself every few seconds
//! (`<meta http-equiv="refresh">`), and is served with a
//! Content-Security-Policy that allows no script at all.
//!
//! Everything a tenant controls (plugin file names, load errors, a
//! plugin's denial message) goes through [`escape`].

use super::recent::{Recent, Summary, WINDOW};
use crate::streams::Streams;
use crate::tenant::registry::Tenants;
use crate::tenant::Tenant;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How often the page reloads itself, in seconds.
pub const REFRESH_SECONDS: u32 = 5;

/// `text` with the characters HTML gives meaning to replaced, safe in an
/// element's text and in a quoted attribute.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "\
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}\
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.15em;margin:1.6em 0 .4em}\
h3{font-size:1em;margin:1em 0 .3em;color:#444}\
table{border-collapse:collapse;margin:.3em 0 1em;background:#fff}\
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}\
th{background:#f0f0f0;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}\
.ok{color:#17692c}.bad{color:#b00020;font-weight:600}.warn{color:#8a5a00}\
.muted{color:#777}code{font-size:.95em}section{border-top:2px solid #ddd;margin-top:1.5em}\
td.msg{max-width:48em;word-break:break-word}";

/// The whole page.
pub fn render(
    tenants: &Tenants,
    recent: &Recent,
    streams: Option<&Streams>,
    now: SystemTime,
) -> String {
    let all = tenants.all();
    recent.retain(|name| all.contains_key(name));
    let runtime = tenants.runtime();
    let mut page = String::with_capacity(16 << 10);
    let _ = write!(
        page,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">\
         <title>Triggerfish status</title><style>{STYLE}</style></head><body>\
         <form method=\"post\" action=\"/status/logout\" style=\"float:right\">\
         <button type=\"submit\">Log out</button></form>\
         <h1>Triggerfish status</h1>\
         <p class=\"muted\">{} &middot; {} tenants &middot; instance slots {} in use, {} waiting, of {} \
         &middot; figures over the last {} minutes &middot; reloads every {REFRESH_SECONDS} s</p>",
        escape(&utc(now)),
        all.len(),
        runtime.instance_slots_in_use(),
        runtime.instance_slots_waiting(),
        runtime.config().max_instances,
        WINDOW.as_secs() / 60,
    );
    if !tenants.is_ready() {
        page.push_str("<p class=\"warn\">Starting: not every tenant is loaded yet.</p>");
    }

    // At a glance: one row per tenant.
    page.push_str(
        "<h2>Tenants</h2><table id=\"tenants\"><tr><th>tenant</th><th>plugins</th>\
         <th>failing files</th><th>invocations</th><th>denied</th><th>failed</th>\
         <th>error rate</th><th>p50</th><th>p99</th><th>in flight</th></tr>",
    );
    let summaries: Vec<(&Tenant, Summary)> = all
        .values()
        .map(|t| (t.as_ref(), recent.summary(&t.name)))
        .collect();
    for (tenant, summary) in &summaries {
        let failing = tenant.failures.len();
        let _ = write!(
            page,
            "<tr data-tenant=\"{name}\"><td><a href=\"#tenant-{name}\">{name}</a></td>\
             <td class=\"n\">{}</td><td class=\"n {}\">{failing}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n {}\">{}</td><td class=\"n {}\">{:.1}%</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{} / {}</td></tr>",
            tenant.plugins.len(),
            if failing > 0 { "bad" } else { "ok" },
            summary.invocations,
            summary.denied,
            if summary.failed > 0 { "bad" } else { "" },
            summary.failed,
            if summary.failed > 0 { "bad" } else { "ok" },
            summary.error_rate() * 100.0,
            latency(summary, summary.p50),
            latency(summary, summary.p99),
            tenant.in_flight(),
            tenant.quotas.concurrency,
            name = escape(&tenant.name),
        );
    }
    page.push_str("</table>");
    if all.is_empty() {
        page.push_str("<p class=\"muted\">No tenant folder in the plugins folder.</p>");
    }

    for (tenant, summary) in &summaries {
        tenant_section(&mut page, tenant, summary, recent, streams);
    }
    page.push_str("</body></html>\n");
    page
}

fn tenant_section(
    page: &mut String,
    tenant: &Tenant,
    summary: &Summary,
    recent: &Recent,
    streams: Option<&Streams>,
) {
    let name = escape(&tenant.name);
    let _ = write!(page, "<section id=\"tenant-{name}\"><h2>Tenant {name}</h2>");
    if summary.invocations == 0 {
        let _ = write!(
            page,
            "<p class=\"muted\">No invocations in the last {} minutes.</p>",
            WINDOW.as_secs() / 60
        );
    } else {
        let _ = write!(
            page,
            "<p>{} invocations in the last {} ({} denied, {} failed, error rate {:.1}%); \
             latency p50 {}, p99 {}, max {}.</p>",
            summary.invocations,
            span(summary.covers),
            summary.denied,
            summary.failed,
            summary.error_rate() * 100.0,
            millis(summary.p50),
            millis(summary.p99),
            millis(summary.max),
        );
    }

    page.push_str(
        "<h3>Plugins</h3><table class=\"plugins\"><tr><th>plugin</th><th>triggers</th>\
         <th>hash</th><th>loaded at</th><th>last load error</th></tr>",
    );
    for plugin in &tenant.plugins {
        let triggers: Vec<&str> = plugin.triggers().map(|t| t.wit_name()).collect();
        let error = tenant.failure_of(&plugin.name).map_or_else(
            || "<span class=\"muted\">none</span>".to_owned(),
            |f| {
                format!(
                    "<span class=\"bad\">{}</span> (the previous version serves)",
                    escape(&f.error)
                )
            },
        );
        let _ = write!(
            page,
            "<tr><td><code>{}</code></td><td>{}</td><td><code title=\"{hash}\">{}</code></td>\
             <td>{}</td><td class=\"msg\">{error}</td></tr>",
            escape(&plugin.name),
            escape(&triggers.join(", ")),
            escape(&plugin.hash()[..12.min(plugin.hash().len())]),
            escape(&utc(plugin.loaded_at)),
            hash = escape(plugin.hash()),
        );
    }
    // Files refused with nothing serving in their place.
    for failure in tenant
        .failures
        .iter()
        .filter(|f| !tenant.plugins.iter().any(|p| p.name == f.plugin))
    {
        let _ = write!(
            page,
            "<tr><td><code>{}</code></td><td class=\"muted\">-</td><td class=\"muted\">-</td>\
             <td>{}</td><td class=\"msg\"><span class=\"bad\">{}</span>{}</td></tr>",
            escape(&failure.plugin),
            escape(&utc(failure.at)),
            escape(&failure.error),
            if failure.serving_previous {
                " (the previous settings serve)"
            } else {
                " (the tenant's events fail with no-handler until it is fixed)"
            },
        );
    }
    if tenant.plugins.is_empty() && tenant.failures.is_empty() {
        page.push_str("<tr><td colspan=\"5\" class=\"muted\">no plugins</td></tr>");
    }
    page.push_str("</table>");

    let failures = recent.failures(&tenant.name);
    page.push_str("<h3>Recent failures</h3>");
    if failures.is_empty() {
        page.push_str("<p class=\"muted\">none</p>");
    } else {
        page.push_str(
            "<table class=\"failures\"><tr><th>at</th><th>trigger</th><th>plugin</th>\
             <th>kind</th><th>message</th></tr>",
        );
        for failure in failures {
            let _ = write!(
                page,
                "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td class=\"{}\">{}</td>\
                 <td class=\"msg\">{}</td></tr>",
                escape(&utc(failure.at)),
                escape(failure.trigger),
                escape(failure.plugin.as_deref().unwrap_or("-")),
                if failure.kind == "denied" {
                    "warn"
                } else {
                    "bad"
                },
                escape(failure.kind),
                escape(&failure.message),
            );
        }
        page.push_str("</table>");
    }
    if let Some(streams) = streams {
        event_sources(page, tenant, streams);
    }
    page.push_str("</section>");
}

/// The tenant's event source mappings, their counts since the host
/// started and their lag as last measured.
fn event_sources(page: &mut String, tenant: &Tenant, streams: &Streams) {
    use crate::streams::Counters;
    if tenant.event_sources.is_empty() {
        return;
    }
    let lags = streams.lags();
    page.push_str(
        "<h3>Event sources</h3><table class=\"sources\"><tr><th>mapping</th><th>stream</th>\
         <th>kind</th><th>records in</th><th>processed</th><th>failed</th><th>retried</th>\
         <th>to failure destination</th><th>lag</th></tr>",
    );
    for mapping in &tenant.event_sources {
        let c = streams.counters(&tenant.name, &mapping.name);
        let lag = match lags.get(&(tenant.name.clone(), mapping.name.clone())) {
            _ if !mapping.enabled => "<span class=\"muted\">disabled</span>".to_owned(),
            Some(0) => "<span class=\"ok\">0</span>".to_owned(),
            Some(lag) => format!("<span class=\"warn\">{lag}</span>"),
            None => "<span class=\"muted\">-</span>".to_owned(),
        };
        let failed = Counters::get(&c.failed);
        let _ = write!(
            page,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n{}\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            escape(&mapping.name),
            escape(&mapping.stream),
            mapping.kind,
            Counters::get(&c.records_in),
            Counters::get(&c.processed),
            if failed > 0 { " bad" } else { "" },
            failed,
            Counters::get(&c.retried),
            Counters::get(&c.sent_to_failure_destination),
            lag,
        );
    }
    page.push_str("</table>");
}

/// The login form, shown to a browser without a session.
pub fn login_page(problem: Option<&str>) -> String {
    let problem = problem
        .map(|p| format!("<p class=\"bad\">{}</p>", escape(p)))
        .unwrap_or_default();
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Triggerfish status: log in</title><style>{STYLE}</style></head><body>\
         <h1>Triggerfish status</h1>{problem}\
         <form method=\"post\" action=\"/status/login\">\
         <p><label>Operator key <input type=\"password\" name=\"key\" id=\"key\" \
         autocomplete=\"current-password\" required autofocus></label> \
         <button type=\"submit\" id=\"login\">Log in</button></p></form>\
         <p class=\"muted\">A key whose hash is in the host's <code>--admin-keys</code> file \
         (see <code>triggerfish hash-key</code>). The page keeps you logged in with a cookie \
         for 12 hours, or until the host restarts.</p></body></html>\n"
    )
}

fn millis(duration: Duration) -> String {
    let ms = duration.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

/// A latency figure, or a dash when there is nothing to measure.
fn latency(summary: &Summary, figure: Duration) -> String {
    if summary.invocations == 0 {
        "-".to_owned()
    } else {
        millis(figure)
    }
}

fn span(duration: Duration) -> String {
    let seconds = duration.as_secs().max(1);
    if seconds < 120 {
        format!("{seconds} s")
    } else {
        format!("{} min", seconds / 60)
    }
}

/// `2026-11-23 23:59:01 UTC`.
pub fn utc(at: SystemTime) -> String {
    let seconds = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = crate::encoding::civil_date(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_strings_are_escaped() {
        assert_eq!(
            escape("<script>alert('x')</script>&\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"
        );
    }

    #[test]
    fn times_are_utc() {
        assert_eq!(utc(UNIX_EPOCH), "1970-01-01 00:00:00 UTC");
        assert_eq!(
            utc(UNIX_EPOCH + Duration::from_secs(1_795_478_400 + 3661)),
            "2026-11-24 01:01:01 UTC"
        );
        assert_eq!(
            utc(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29 00:00:00 UTC"
        );
    }
}
