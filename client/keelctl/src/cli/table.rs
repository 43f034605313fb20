//! Plain-text tables with aligned columns, for `--output table`.
//!
//! Columns are separated by two spaces and padded to the widest cell; the
//! last column is not padded, so no line has trailing spaces. Control
//! characters in cells are escaped so one record is always one line.

/// Spaces between columns.
const COLUMN_GAP: &str = "  ";

/// Rows of cells with an optional header row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    header: Option<Vec<String>>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with a header row.
    pub fn with_header(header: &[&str]) -> Self {
        Table { header: Some(header.iter().map(|cell| (*cell).to_owned()).collect()), rows: Vec::new() }
    }

    /// A two-column `field  value` table without a header.
    pub fn fields() -> Self {
        Table::default()
    }

    /// Appends a row.
    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) -> &mut Self {
        self.rows.push(cells.into_iter().map(|cell| escape(&cell.into())).collect());
        self
    }

    /// Appends a `field  value` row.
    pub fn field(&mut self, name: &str, value: impl ToString) -> &mut Self {
        self.row([name.to_owned(), value.to_string()])
    }

    /// The rendered text, one line per row, each ending in a newline.
    pub fn render(&self) -> String {
        let all_rows: Vec<&Vec<String>> = self.header.iter().chain(self.rows.iter()).collect();
        let n_columns = all_rows.iter().map(|row| row.len()).max().unwrap_or(0);
        let mut widths = vec![0usize; n_columns];
        for row in &all_rows {
            for (index, cell) in row.iter().enumerate() {
                widths[index] = widths[index].max(cell.chars().count());
            }
        }
        let mut text = String::new();
        for row in all_rows {
            let mut line = String::new();
            for (index, cell) in row.iter().enumerate() {
                if index > 0 {
                    line.push_str(COLUMN_GAP);
                }
                line.push_str(cell);
                if index + 1 < row.len() {
                    let padding = widths[index].saturating_sub(cell.chars().count());
                    line.extend(std::iter::repeat_n(' ', padding));
                }
            }
            text.push_str(line.trim_end());
            text.push('\n');
        }
        text
    }
}

/// Escapes control characters so a cell stays on one line.
fn escape(cell: &str) -> String {
    if !cell.chars().any(char::is_control) {
        return cell.to_owned();
    }
    cell.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_aligned_without_trailing_spaces() {
        let mut table = Table::with_header(&["KEY_ID", "PURPOSES", "REVISION"]);
        table.row(["ab", "ENGINE_PUBLISHER", "3"]).row(["abcdef", "API_TOKEN", "12"]).row(["x", "", ""]);
        assert_eq!(
            table.render(),
            "KEY_ID  PURPOSES          REVISION\nab      ENGINE_PUBLISHER  3\nabcdef  API_TOKEN         12\nx\n"
        );
    }

    #[test]
    fn fields_render_as_two_columns_and_escape_newlines() {
        let mut table = Table::fields();
        table.field("name", "echo").field("description", "two\nlines");
        assert_eq!(table.render(), "name         echo\ndescription  two\\nlines\n");
    }

    #[test]
    fn an_empty_table_with_a_header_prints_the_header() {
        assert_eq!(Table::with_header(&["A", "B"]).render(), "A  B\n");
    }
}
