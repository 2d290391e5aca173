//! OpenMetrics text helpers shared by everything that writes metric
//! families (operator metrics in `control::metrics`, conditioning gauges in
//! `ads::conditioning`). The bottom layer: plain text, no records.

/// Label values are host names, reason kinds and sources: anything else
/// is replaced so a key always parses back.
pub fn label_value(v: &str) -> String {
    v.chars()
        .take(100)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '+') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_parse_back() {
        assert_eq!(label_value("a.b-c_d:1+2"), "a.b-c_d:1+2");
        assert_eq!(label_value("x\"y}z\n"), "x_y_z_");
        assert_eq!(label_value(&"é".repeat(200)).chars().count(), 100);
    }
}
