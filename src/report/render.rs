//! Renderings of an [`AuditReport`]: canonical JSON (the signed form), CSV (one row per item),
//! Markdown, and a self-contained HTML page with an inline SVG chart.

use super::ReportError;
use reconciler::audit::{AssetReport, AuditReport, Item, Point, SignedQty, Verdict};
use serde_json::Value;
use std::fmt::Write as _;

/// The report as a JSON value with every object's keys sorted, whatever serde_json's features:
/// the form that is printed and signed, so the same report always gives the same bytes.
pub fn canonical_value(report: &impl serde::Serialize) -> Result<Value, ReportError> {
    serde_json::to_value(report)
        .map(sorted)
        .map_err(|e| ReportError::Json(e.to_string()))
}

/// Recursively rebuilds objects with sorted keys.
pub fn sorted(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// The exact bytes a signature covers: compact JSON of the sorted value.
pub fn canonical_bytes(value: &Value) -> Result<Vec<u8>, ReportError> {
    serde_json::to_vec(&sorted(value.clone())).map_err(|e| ReportError::Json(e.to_string()))
}

pub fn json(report: &impl serde::Serialize) -> Result<String, ReportError> {
    let value = canonical_value(report)?;
    let mut text =
        serde_json::to_string_pretty(&value).map_err(|e| ReportError::Json(e.to_string()))?;
    text.push('\n');
    Ok(text)
}

/// One row per item (bot-wide notices have an empty asset).
pub fn csv(report: &AuditReport) -> String {
    let mut out = String::from(
        "at_block,asset,kind,block,log_index,tx_hash,tokenization_request_id,issuer_request_id,wallet,qty,effect,detail\n",
    );
    let rows = report
        .assets
        .iter()
        .flat_map(|a| a.items.iter().map(move |i| (a.underlying.as_str(), i)))
        .chain(report.notices.iter().map(|i| ("", i)));
    for (asset, item) in rows {
        let fields = [
            report.at_block.to_string(),
            asset.to_owned(),
            item.kind.to_string(),
            item.at.map(|a| a.block.to_string()).unwrap_or_default(),
            item.at.map(|a| a.log_index.to_string()).unwrap_or_default(),
            item.at
                .map(|a| format!("{:#x}", a.tx_hash))
                .unwrap_or_default(),
            item.tokenization_request_id.clone().unwrap_or_default(),
            item.issuer_request_id.clone().unwrap_or_default(),
            item.wallet.map(|w| format!("{w:#x}")).unwrap_or_default(),
            item.qty.to_string(),
            item.effect.to_string(),
            item.detail.clone(),
        ];
        let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        out.push_str(&line.join(","));
        out.push('\n');
    }
    // The verdict as the last row, so a spreadsheet shows it without the JSON.
    let fields = [
        report.at_block.to_string(),
        String::new(),
        "verdict".to_owned(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        verdict(report),
    ];
    let row: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
    out.push_str(&row.join(","));
    out.push('\n');
    out
}

/// RFC 4180 quoting, and a leading `'` for text a spreadsheet would run as a formula.
fn csv_field(text: &str) -> String {
    let guarded = if text.starts_with(['=', '+', '@'])
        || (text.starts_with('-') && text.parse::<f64>().is_err())
    {
        format!("'{text}")
    } else {
        text.to_owned()
    };
    if guarded.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", guarded.replace('"', "\"\""))
    } else {
        guarded
    }
}

/// The one line an auditor reads first; the same words in every format.
pub fn verdict(report: &AuditReport) -> String {
    match report.verdict {
        Verdict::Balanced => {
            "BALANCED: every token on chain is explained by a completed journal at Alpaca"
                .to_owned()
        }
        Verdict::BalancedWithAttention => format!(
            "BALANCED, {} item(s) need attention: the difference is zero, but see the items below",
            report.attention
        ),
        Verdict::NotBalanced => "NOT BALANCED: the items below explain the difference".to_owned(),
    }
}

/// The totals as (label, value) rows, shared by Markdown and HTML.
fn totals_rows(a: &AssetReport) -> Vec<(&'static str, String)> {
    let t = &a.totals;
    vec![
        ("Total supply on chain", t.total_supply.to_string()),
        (
            "Supply from the vault's logs",
            t.supply_from_logs.to_string(),
        ),
        (
            "Minted through us (tagged deposits)",
            format!("{} ({} deposits)", t.minted, t.deposits),
        ),
        ("Minted without our tag", t.minted_untagged.to_string()),
        ("Burned", format!("{} ({} burns)", t.burned, t.withdraws)),
        ("Returned to senders", t.returned.to_string()),
        ("Dust returned with burns", t.dust_returned.to_string()),
        (
            "Waiting in the bot's wallet",
            format!(
                "{} ({} transfers in total)",
                t.waiting_in_bot, t.redemptions
            ),
        ),
        ("Bot's share balance", t.bot_shares.to_string()),
        ("Alpaca completed mints", t.alpaca_minted.to_string()),
        ("Alpaca completed redeems", t.alpaca_redeemed.to_string()),
        (
            "Journaled at Alpaca (mints − redeems)",
            t.alpaca_journaled.to_string(),
        ),
        (
            "Alpaca requests after this block (left out)",
            t.alpaca_after_block.to_string(),
        ),
        (
            "**Difference** (supply − journaled)",
            a.difference.to_string(),
        ),
        ("Explained by the items", a.explained.to_string()),
        ("Unexplained", a.unexplained.to_string()),
    ]
}

fn md_cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

fn item_where(item: &Item) -> String {
    item.at.map_or_else(
        || "—".to_owned(),
        |a| format!("{} #{}", a.block, a.log_index),
    )
}

fn item_request(item: &Item) -> String {
    item.tokenization_request_id
        .clone()
        .or_else(|| item.issuer_request_id.clone())
        .unwrap_or_default()
}

pub fn markdown(report: &AuditReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Issuer audit report at block {}\n", report.at_block);
    let _ = writeln!(out, "**{}**\n", verdict(report));
    let _ = writeln!(out, "- schema version: {}", report.schema_version);
    let _ = writeln!(out, "- bot transactions in flight: {}\n", report.in_flight);
    let _ = writeln!(
        out,
        "Difference = total supply − (Alpaca completed mints − Alpaca completed redeems). Each item's effect is its exact share of it.\n"
    );
    for a in &report.assets {
        let _ = writeln!(out, "## {} → {} on {}\n", a.underlying, a.token, a.network);
        let _ = writeln!(
            out,
            "vault `{:#x}`, bot `{:#x}`, scanned from block {}\n",
            a.vault, a.bot, a.deploy_block
        );
        let _ = writeln!(out, "| | quantity |\n| --- | ---: |");
        for (label, value) in totals_rows(a) {
            let _ = writeln!(out, "| {label} | {value} |");
        }
        let _ = writeln!(out);
        if a.items.is_empty() {
            let _ = writeln!(out, "No items: nothing needs attention.\n");
        } else {
            let _ = writeln!(out, "### Items ({})\n", a.items.len());
            let _ = writeln!(
                out,
                "| where | kind | request | wallet | qty | effect | detail |"
            );
            let _ = writeln!(out, "| --- | --- | --- | --- | ---: | ---: | --- |");
            for i in &a.items {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} | {} |",
                    item_where(i),
                    i.kind,
                    md_cell(&item_request(i)),
                    i.wallet.map(|w| format!("`{w:#x}`")).unwrap_or_default(),
                    i.qty,
                    i.effect,
                    md_cell(&i.detail)
                );
            }
            let _ = writeln!(out);
        }
        let _ = writeln!(out, "### Receipts held by the bot ({})\n", a.receipts.len());
        if !a.receipts.is_empty() {
            let _ = writeln!(
                out,
                "| id | balance | request | deposit block |\n| ---: | ---: | --- | ---: |"
            );
            for r in &a.receipts {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} |",
                    r.id,
                    r.balance,
                    md_cell(r.tokenization_request_id.as_deref().unwrap_or("(not ours)")),
                    r.deposit_block.map(|b| b.to_string()).unwrap_or_default()
                );
            }
            let _ = writeln!(out);
        }
    }
    for n in &report.notices {
        let _ = writeln!(out, "> **{}**: {}\n", n.kind, md_cell(&n.detail));
    }
    out
}

fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A quantity as a float for drawing only: the chart is a picture, every number shown is exact.
#[allow(clippy::cast_precision_loss)]
fn plot_value(q: SignedQty) -> f64 {
    let text = q.to_string();
    text.parse::<f64>().unwrap_or(0.0)
}

/// Supply and journaled quantity over blocks as two step lines.
#[allow(clippy::cast_precision_loss)]
fn chart(series: &[Point]) -> String {
    let (Some(first), Some(last)) = (series.first(), series.last()) else {
        return "<p>No mints or burns up to this block.</p>".to_owned();
    };
    let (w, h, pad) = (640.0_f64, 220.0_f64, 36.0_f64);
    let span = (last.block.saturating_sub(first.block)).max(1) as f64;
    let top = series
        .iter()
        .flat_map(|p| [plot_value(p.supply), plot_value(p.journaled)])
        .fold(0.0_f64, f64::max)
        .max(1e-18);
    let bottom = series
        .iter()
        .flat_map(|p| [plot_value(p.supply), plot_value(p.journaled)])
        .fold(0.0_f64, f64::min);
    let x = |b: u64| pad + (b.saturating_sub(first.block) as f64) / span * (w - 2.0 * pad);
    let y = |v: f64| h - pad - (v - bottom) / (top - bottom) * (h - 2.0 * pad);
    let line = |pick: &dyn Fn(&Point) -> SignedQty| {
        let mut path = String::new();
        let mut prev: Option<f64> = None;
        for p in series {
            let (px, py) = (x(p.block), y(plot_value(pick(p))));
            match prev {
                None => {
                    let _ = write!(path, "M{px:.1},{py:.1}");
                }
                Some(old) => {
                    let _ = write!(path, " L{px:.1},{old:.1} L{px:.1},{py:.1}");
                }
            }
            prev = Some(py);
        }
        path
    };
    let supply = line(&|p: &Point| p.supply);
    let journaled = line(&|p: &Point| p.journaled);
    format!(
        r##"<svg viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="supply versus journaled quantity">
<rect x="0" y="0" width="{w}" height="{h}" fill="#fff"/>
<line x1="{pad}" y1="{yb:.1}" x2="{xe:.1}" y2="{yb:.1}" stroke="#999"/>
<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{yb:.1}" stroke="#999"/>
<path d="{supply}" fill="none" stroke="#1f6feb" stroke-width="2"/>
<path d="{journaled}" fill="none" stroke="#d97706" stroke-width="2" stroke-dasharray="5 3"/>
<text x="{pad}" y="{ly:.1}" font-size="11">block {b0}</text>
<text x="{xe:.1}" y="{ly:.1}" font-size="11" text-anchor="end">block {b1}</text>
<text x="4" y="{pad}" font-size="11">{top_label}</text>
<text x="{lx:.1}" y="16" font-size="12" fill="#1f6feb">— supply</text>
<text x="{lx2:.1}" y="16" font-size="12" fill="#d97706">- - journaled at Alpaca</text>
</svg>"##,
        yb = h - pad,
        xe = w - pad,
        ly = h - pad + 16.0,
        b0 = first.block,
        b1 = last.block,
        top_label = esc(&format!("{top}")),
        lx = w - 300.0,
        lx2 = w - 200.0,
    )
}

const CSS: &str = "body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:72rem}\
table{border-collapse:collapse;margin:0.5rem 0 1.5rem}th,td{border:1px solid #ccc;padding:0.25rem 0.5rem;text-align:left;vertical-align:top}\
td.n{text-align:right;font-variant-numeric:tabular-nums}th{background:#f3f3f3}code{font-size:0.85em}\
.ok{color:#116329;font-weight:bold}.bad{color:#a40e26;font-weight:bold}.mono{font-family:ui-monospace,monospace;font-size:0.85em}";

pub fn html(report: &AuditReport) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Issuer audit at block {}</title><style>{CSS}</style></head><body>\n",
        report.at_block
    );
    let _ = writeln!(
        out,
        "<h1>Issuer audit report at block {}</h1>",
        report.at_block
    );
    let class = if report.balanced { "ok" } else { "bad" };
    let _ = writeln!(out, "<p class=\"{class}\">{}</p>", esc(&verdict(report)));
    let _ = writeln!(
        out,
        "<p>Schema version {}; bot transactions in flight: {}. Difference = total supply − (Alpaca completed mints − completed redeems); each item's effect is its exact share of it.</p>",
        report.schema_version, report.in_flight
    );
    for a in &report.assets {
        let _ = writeln!(
            out,
            "<h2>{} → {} on {}</h2>",
            esc(a.underlying.as_str()),
            esc(a.token.as_str()),
            esc(a.network.as_str())
        );
        let _ = writeln!(
            out,
            "<p>vault <code>{:#x}</code>, bot <code>{:#x}</code>, scanned from block {}</p>",
            a.vault, a.bot, a.deploy_block
        );
        let _ = writeln!(out, "<table><tbody>");
        for (label, value) in totals_rows(a) {
            let label = label.replace("**", "");
            let _ = writeln!(
                out,
                "<tr><th>{}</th><td class=\"n\">{}</td></tr>",
                esc(&label),
                esc(&value)
            );
        }
        let _ = writeln!(out, "</tbody></table>");
        let _ = writeln!(
            out,
            "<h3>Supply versus journaled quantity</h3>\n{}",
            chart(&a.series)
        );
        let _ = writeln!(out, "<h3>Items ({})</h3>", a.items.len());
        if a.items.is_empty() {
            let _ = writeln!(out, "<p>No items: nothing needs attention.</p>");
        } else {
            let _ = writeln!(
                out,
                "<table><thead><tr><th>where</th><th>kind</th><th>request</th><th>wallet</th><th>qty</th><th>effect</th><th>detail</th></tr></thead><tbody>"
            );
            for i in &a.items {
                let _ = writeln!(
                    out,
                    "<tr><td>{}</td><td>{}</td><td class=\"mono\">{}</td><td class=\"mono\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
                    esc(&item_where(i)),
                    i.kind,
                    esc(&item_request(i)),
                    i.wallet.map(|w| format!("{w:#x}")).unwrap_or_default(),
                    i.qty,
                    i.effect,
                    esc(&i.detail)
                );
            }
            let _ = writeln!(out, "</tbody></table>");
        }
        let _ = writeln!(
            out,
            "<h3>Receipts held by the bot ({})</h3>",
            a.receipts.len()
        );
        if !a.receipts.is_empty() {
            let _ = writeln!(out, "<table><thead><tr><th>id</th><th>balance</th><th>request</th><th>deposit block</th></tr></thead><tbody>");
            for r in &a.receipts {
                let _ = writeln!(
                    out,
                    "<tr><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"mono\">{}</td><td class=\"n\">{}</td></tr>",
                    r.id,
                    r.balance,
                    esc(r.tokenization_request_id.as_deref().unwrap_or("(not ours)")),
                    r.deposit_block.map(|b| b.to_string()).unwrap_or_default()
                );
            }
            let _ = writeln!(out, "</tbody></table>");
        }
    }
    for n in &report.notices {
        let _ = writeln!(out, "<p class=\"bad\">{}: {}</p>", n.kind, esc(&n.detail));
    }
    out.push_str("</body></html>\n");
    out
}

/// Several networks in Markdown: the totals per underlying, then one section per network.
pub fn networks_markdown(report: &reconciler::audit::NetworksReport) -> String {
    let mut out = String::from("# Audit across networks\n\n");
    let _ = writeln!(
        out,
        "Verdict: **{}**; {} item(s) need attention.\n",
        match report.verdict {
            Verdict::Balanced => "balanced",
            Verdict::BalancedWithAttention => "balanced, with items to look at",
            Verdict::NotBalanced => "NOT balanced",
        },
        report.attention
    );
    out.push_str(
        "| underlying | networks | supply on all networks | journaled at Alpaca | difference |\n",
    );
    out.push_str("| --- | --- | --- | --- | --- |\n");
    for total in &report.totals {
        let networks: Vec<&str> = total
            .networks
            .iter()
            .map(reconciler::Network::as_str)
            .collect();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            total.underlying,
            networks.join(", "),
            total.supply.to_decimal(),
            total.journaled,
            total.difference
        );
    }
    for section in &report.networks {
        let _ = write!(
            out,
            "\n## Network {} (chain id {}, block {})\n\n",
            section.network, section.chain_id, section.report.at_block
        );
        out.push_str(&markdown(&section.report));
    }
    out
}
