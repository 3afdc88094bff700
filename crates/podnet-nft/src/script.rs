//! nft scripts: commands written as text and applied by `nft -f -` as one transaction.
//!
//! A script piped to `nft -f -` is one kernel transaction: it applies entirely or not at all, so
//! a half-written ruleset is never live. This is how Kubernetes' own nftables proxy (knftables)
//! drives the kernel, and how podnet creates and changes its tables' structure. Kernel cost
//! worth knowing: a transaction that *deletes* anything makes the `nft` process wait for an RCU
//! grace period when it closes its socket (10-20 ms measured), while one that only adds returns
//! in about 3 ms; element changes on hot paths therefore go over netlink ([`crate::elements`]).

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::{Child, Command, Stdio};

use crate::Error;
use crate::elements::Operation;
use crate::model::{Chain, Data, Datum, Element, Set, Table, quote, write_element};

/// The nft executable, found on `PATH`.
const NFT: &str = "nft";

/// An nft script built up command by command and applied as one transaction.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Script {
    text: String,
}

impl Script {
    /// An empty script.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the script has no command.
    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    /// The script text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Appends another script's commands.
    pub fn append(&mut self, other: &Script) -> &mut Self {
        self.text.push_str(&other.text);
        self
    }

    fn line(&mut self, command: std::fmt::Arguments<'_>) -> &mut Self {
        let _ = self.text.write_fmt(command);
        self.text.push('\n');
        self
    }

    /// Creates `table` (with its comment), failing if it exists: concurrent creators see one of
    /// them win.
    pub fn create_table(&mut self, table: &Table) -> &mut Self {
        self.line(format_args!(
            "create table {} {{ comment {}; }}",
            table.reference(),
            quote(table.comment)
        ))
    }

    /// Replaces `table`, whatever it holds, by an empty one: the old table and the new content
    /// the script goes on to add are swapped in one commit.
    pub fn replace_table(&mut self, table: &Table) -> &mut Self {
        let reference = table.reference();
        self.line(format_args!("add table {reference}"));
        self.line(format_args!("delete table {reference}"));
        self.line(format_args!(
            "add table {reference} {{ comment {}; }}",
            quote(table.comment)
        ))
    }

    /// Adds `set`.
    pub fn add_set(&mut self, table: &Table, set: &Set) -> &mut Self {
        self.line(format_args!(
            "add {} {} {} {{ {}}}",
            if set.data.is_some() { "map" } else { "set" },
            table.reference(),
            set.name,
            set.body()
        ))
    }

    /// Deletes `set` and its elements.
    pub fn delete_set(&mut self, table: &Table, name: &str) -> &mut Self {
        self.line(format_args!("delete set {} {name}", table.reference()))
    }

    /// Declares `chain` (a base chain with its hook), without rules.
    pub fn add_chain(&mut self, table: &Table, chain: &Chain) -> &mut Self {
        self.line(format_args!(
            "add chain {} {}{}",
            table.reference(),
            chain.name,
            chain.declaration()
        ))
    }

    /// Appends `chain`'s rules to it.
    pub fn add_rules(&mut self, table: &Table, chain: &Chain) -> &mut Self {
        for rule in &chain.rules {
            self.line(format_args!(
                "add rule {} {} {rule}",
                table.reference(),
                chain.name
            ));
        }
        self
    }

    /// Removes every rule of chain `name`.
    pub fn flush_chain(&mut self, table: &Table, name: &str) -> &mut Self {
        self.line(format_args!("flush chain {} {name}", table.reference()))
    }

    /// Deletes chain `name` (it must not be referenced any more).
    pub fn delete_chain(&mut self, table: &Table, name: &str) -> &mut Self {
        self.line(format_args!("delete chain {} {name}", table.reference()))
    }

    /// Adds or deletes `elements` of set `set`.
    pub fn elements<'a>(
        &mut self,
        table: &Table,
        set: &str,
        operation: Operation,
        elements: impl IntoIterator<Item = &'a Element>,
    ) -> &mut Self {
        let parts = elements
            .into_iter()
            .map(|element| (&element.key[..], element.data.as_ref()));
        self.element_parts(table, set, operation, parts)
    }

    /// Adds or deletes the elements of set `set` given as key and data: written straight into
    /// the script, in commands of at most 10,000 elements (nft reads each command into memory
    /// at once).
    pub(crate) fn element_parts<'a>(
        &mut self,
        table: &Table,
        set: &str,
        operation: Operation,
        elements: impl IntoIterator<Item = (&'a [Datum], Option<&'a Data>)>,
    ) -> &mut Self {
        const CHUNK: usize = 10_000;
        let verb = match operation {
            Operation::Add => "add",
            Operation::Delete => "delete",
        };
        let mut count = 0;
        for (key, data) in elements {
            if count % CHUNK == 0 {
                if count > 0 {
                    self.text.push_str(" }\n");
                }
                let _ = write!(self.text, "{verb} element {} {set} {{ ", table.reference());
            } else {
                self.text.push_str(", ");
            }
            let data = match operation {
                Operation::Add => data,
                Operation::Delete => None,
            };
            let _ = write_element(&mut self.text, key, data);
            count += 1;
        }
        if count > 0 {
            self.text.push_str(" }\n");
        }
        self
    }

    /// Asks for `elements` of `set`: the script fails unless all exist.
    pub fn get_elements<'a>(
        &mut self,
        table: &Table,
        set: &str,
        elements: impl IntoIterator<Item = &'a Element>,
    ) -> &mut Self {
        let keys: Vec<String> = elements.into_iter().map(Element::key_text).collect();
        self.line(format_args!(
            "get element {} {set} {{ {} }}",
            table.reference(),
            keys.join(", ")
        ))
    }

    /// Deletes `elements` of `set` whether or not they exist: nft 1.0.6 has no `destroy`, but
    /// adding an existing element is a no-op, so adding, then deleting, always succeeds.
    pub fn delete_elements_if_present<'a>(
        &mut self,
        table: &Table,
        set: &str,
        elements: impl IntoIterator<Item = &'a Element> + Clone,
    ) -> &mut Self {
        self.elements(table, set, Operation::Add, elements.clone());
        self.elements(table, set, Operation::Delete, elements)
    }

    /// Applies the script and waits for the kernel's answer.
    pub fn apply(&self) -> Result<(), Error> {
        let mut child = spawn()?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        // A large script does not fit the pipe: it is written while nft reads (and its
        // errors collected), without a copy of the text.
        let output = std::thread::scope(|scope| {
            scope.spawn(move || {
                let _ = stdin.write_all(self.text.as_bytes());
            });
            child.wait_with_output()
        })
        .map_err(Error::Spawn)?;
        outcome(output)
    }

    /// Starts applying the script in an `nft` process and returns at once, so the caller can do
    /// other work while the kernel commits; [`Pending::wait`] collects the outcome.
    pub fn start(&self) -> Result<Pending, Error> {
        let mut child = spawn()?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let text = self.text.clone();
        // A large script does not fit the pipe: write it from a thread while nft reads.
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(text.as_bytes());
        });
        Ok(Pending { child, writer })
    }
}

/// A script being applied by a running `nft` process.
#[derive(Debug)]
pub struct Pending {
    child: Child,
    writer: std::thread::JoinHandle<()>,
}

impl Pending {
    /// Waits for `nft` to finish and reports whether the kernel accepted the transaction.
    pub fn wait(self) -> Result<(), Error> {
        let output = self.child.wait_with_output().map_err(Error::Spawn)?;
        let _ = self.writer.join();
        outcome(output)
    }
}

/// `nft -f -`, reading the script from its stdin.
fn spawn() -> Result<Child, Error> {
    Command::new(NFT)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(Error::Spawn)
}

/// Whether the kernel accepted the transaction, as `nft` says.
fn outcome(output: std::process::Output) -> Result<(), Error> {
    if output.status.success() {
        return Ok(());
    }
    Err(Error::Rejected {
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Datum, Family};

    const TABLE: Table = Table {
        family: Family::Inet,
        name: "podnet-cni",
        comment: "podnet CNI plugins",
    };

    #[test]
    fn deleting_possibly_missing_elements_adds_them_first() {
        let element = Element::key([Datum::Prefix("10.0.0.0/24".parse().unwrap())]);
        let mut script = Script::new();
        script.delete_elements_if_present(&TABLE, "masq-v4", [&element]);
        assert_eq!(
            script.text(),
            "add element inet podnet-cni masq-v4 { 10.0.0.0/24 }\n\
             delete element inet podnet-cni masq-v4 { 10.0.0.0/24 }\n"
        );
    }

    #[test]
    fn a_replaced_table_is_swapped_in_one_commit() {
        let mut script = Script::new();
        script.replace_table(&TABLE);
        assert_eq!(
            script.text(),
            "add table inet podnet-cni\ndelete table inet podnet-cni\n\
             add table inet podnet-cni { comment \"podnet CNI plugins\"; }\n"
        );
    }
}
