//! The shell completions and the man page, made from the command line's
//! definition.

use crate::error::Error;
use crate::exit::ExitStatus;
use crate::output;

/// `sockcheck completions SHELL`.
pub(super) fn completions(shell: clap_complete::Shell) -> Result<ExitStatus, Error> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut super::generated(), "sockcheck", &mut script);
    output::write_stdout(&String::from_utf8_lossy(&script))?;
    Ok(ExitStatus::Free)
}

/// `sockcheck man`: one page, the top-level command's sections, then
/// a COMMANDS IN DETAIL section with each command's synopsis, description,
/// options and exit statuses (clap_mangen alone lists commands by name only),
/// then the top level's exit statuses and version.
pub(super) fn man() -> Result<ExitStatus, Error> {
    let page = man_page().map_err(|e| Error::syscall("rendering the man page", e))?;
    output::write_stdout(&page)?;
    Ok(ExitStatus::Free)
}

fn man_page() -> std::io::Result<String> {
    let cmd = super::generated(); // built: each command has its bin name, `sockcheck watch`
    let top = clap_mangen::Man::new(cmd.clone());
    let mut page = Vec::new();
    top.render_title(&mut page)?;
    top.render_name_section(&mut page)?;
    top.render_synopsis_section(&mut page)?;
    top.render_description_section(&mut page)?;
    top.render_options_section(&mut page)?;
    top.render_subcommands_section(&mut page)?;
    page.extend_from_slice(b".SH \"COMMANDS IN DETAIL\"\n");
    for sub in cmd.get_subcommands().filter(|c| !c.is_hide_set()) {
        let name = sub.get_bin_name().unwrap_or(sub.get_name());
        page.extend_from_slice(format!(".SS \"{name}\"\n").as_bytes());
        let man = clap_mangen::Man::new(sub.clone());
        let mut part = Vec::new();
        man.render_synopsis_section(&mut part)?;
        man.render_description_section(&mut part)?;
        if sub.get_arguments().any(|a| !a.is_hide_set()) {
            man.render_options_section(&mut part)?;
        }
        if sub.get_after_long_help().is_some() {
            man.render_extra_section(&mut part)?;
        }
        // Sections of the command become paragraphs of its subsection.
        for line in String::from_utf8_lossy(&part).lines() {
            let line = if line.starts_with(".SH ") {
                ".PP"
            } else {
                line
            };
            page.extend_from_slice(line.as_bytes());
            page.push(b'\n');
        }
    }
    top.render_extra_section(&mut page)?;
    top.render_version_section(&mut page)?;
    Ok(String::from_utf8_lossy(&page).into_owned())
}
