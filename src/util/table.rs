//! A table of text cells, rendered as Markdown (the terminal and `.md` files) or as HTML (the report).

/// A titled table: a header row and body rows of cells.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Table {
    pub title: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(title: &str, columns: &[&str]) -> Table {
        Table { title: title.to_string(), columns: columns.iter().map(|c| c.to_string()).collect(), rows: vec![] }
    }

    /// Appends a row (as many cells as columns).
    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.columns.len(), "a row of table '{}'", self.title);
        self.rows.push(cells);
    }

    /// GitHub-flavoured Markdown: a bold title line, then the table (`|` in cells escaped).
    pub fn to_markdown(&self) -> String {
        let line = |cells: &[String]| {
            let cells: Vec<String> = cells.iter().map(|c| c.replace('|', "\\|").replace('\n', " ")).collect();
            format!("| {} |\n", cells.join(" | "))
        };
        let mut s = format!("**{}**\n\n", self.title);
        s += &line(&self.columns);
        s += &format!("|{}\n", "---|".repeat(self.columns.len()));
        for r in &self.rows {
            s += &line(r);
        }
        s
    }

    /// An HTML `<table>` with a `<caption>`, every cell escaped.
    pub fn to_html(&self) -> String {
        let mut s = format!("<table>\n<caption>{}</caption>\n<tr>", escape_html(&self.title));
        for c in &self.columns {
            s += &format!("<th>{}</th>", escape_html(c));
        }
        s += "</tr>\n";
        for r in &self.rows {
            s += "<tr>";
            for c in r {
                s += &format!("<td>{}</td>", escape_html(c));
            }
            s += "</tr>\n";
        }
        s + "</table>\n"
    }
}

/// `&`, `<`, `>` and `"` as HTML entities.
pub fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
