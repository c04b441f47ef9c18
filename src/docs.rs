//! Man pages and shell completions, generated from the CLI definitions.
//!
//! Owns: writing `NAME.1` (clap_mangen) and bash/zsh/fish completions
//! (clap_complete) for one binary into a directory, for packaging. Must
//! never: run in the supervisor's normal paths (only the hidden
//! `generate-docs` subcommand calls it).

use std::path::Path;

/// Write `<dir>/man/NAME.1` and `<dir>/completions/{NAME.bash,_NAME,NAME.fish}`.
pub fn generate(dir: &Path, mut cmd: clap::Command) -> std::io::Result<()> {
    let name = cmd.get_name().to_string();
    let man = dir.join("man");
    let comp = dir.join("completions");
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&comp)?;
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut page)?;
    std::fs::write(man.join(format!("{name}.1")), page)?;
    for (shell, file) in [
        (clap_complete::Shell::Bash, format!("{name}.bash")),
        (clap_complete::Shell::Zsh, format!("_{name}")),
        (clap_complete::Shell::Fish, format!("{name}.fish")),
    ] {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut cmd, name.clone(), &mut out);
        std::fs::write(comp.join(file), out)?;
    }
    Ok(())
}
