//! The names a cell defines and the names it uses, for the rule that keeps a check honest: an
//! answer cell may not define a name the assignment's locked cells after it use (beyond the
//! names the released answer cell itself defines, which are the student's to write).
//!
//! evcxr keeps a cell's items and variables for every cell after it, and an item of the
//! notebook's own crate comes before a glob import (`use sgm_homework::prelude::*`) or the
//! standard prelude when a name is looked up; a trait method taking `self` can come before an
//! inherent one taking `&self`. So an answer cell that defines `fn check`, `fn ensure`,
//! `macro_rules! assert`, `struct Tensor`, `mod sgm_homework`, a trait whose `double_value` a
//! check calls, or rebinds a variable a later check reads, changes what the checks after it
//! run: a check could pass for an answer that fails it. Such a cell is not graded (its released
//! stub runs instead), and the validate cell says so before submission.
//!
//! Names are read from the code's syntax (`syn`), not resolved, one namespace at a time as
//! Rust keeps them: values (variables, functions, constants, tuple and unit structs), types
//! (types, traits, modules, crates), macros, and methods; and patterns: a later locked cell that
//! binds `history` anywhere reserves the name for the constants, statics, unit and tuple structs
//! and imports of the answers before it, since with one of those in scope its `let history = …`
//! would not compile, the cell would not run, and the answer's `history` would stand in for its. A cell *uses* the first segment of
//! every path that does not start with `::` (a single-segment path in an expression or pattern
//! as a value, a longer one's first segment or a type as a type), every macro it invokes, every
//! method it calls, also inside macro arguments, less what it binds itself (`let`, parameters,
//! generics, its own `use`). A cell *defines* its top-level items, `let` bindings,
//! `macro_rules!`, the methods of its `impl` blocks and traits wherever they are written (in a
//! module or a function's body too: they apply to the whole crate), and what its `use` items name
//! under a new name or from a module of the notebook's own. Importing a library's item under its
//! own name (`use tch::Tensor;`) defines nothing new. Raw identifiers (`r#check`) count as the
//! name they spell.

use std::collections::HashSet;
use syn::ext::IdentExt;
use syn::visit::Visit;

/// The crates a cell can name that the notebook does not define: a `use` from one of them under
/// the item's own name brings the same item the checks see.
pub(super) const EXTERN_CRATES: [&str; 6] = ["std", "core", "alloc", "tch", "sgm_homework", "sgm"];

/// A name in one of Rust's namespaces, written `value:x`, `type:x`, `macro:x` or `method:x`.
fn named(namespace: &str, ident: &proc_macro2::Ident) -> String {
    // rustc reads identifiers in NFC, where the Kelvin sign is a `K`.
    format!(
        "{namespace}:{}",
        ident.unraw().to_string().replace('\u{212A}', "K")
    )
}

/// Where a method is written: an `impl` block or a trait.
#[derive(Clone, Copy)]
pub(super) enum MethodSite<'ast> {
    Impl(&'ast syn::ItemImpl),
    Trait(&'ast syn::ItemTrait),
}

/// Calls `each` with every method of the `impl` blocks and traits in `block`, with where it is
/// written and whether it has a body, at any depth: an `impl` block or a trait in a module, a
/// function's body or a `const _` block applies to the whole crate, and a trait of a module of
/// the cell's own can be brought in unnamed (`use m::Tr as _;`), so their methods count wherever
/// written.
pub(super) fn each_method<'ast>(
    block: &'ast syn::Block,
    each: impl FnMut(MethodSite<'ast>, &'ast syn::Signature, bool),
) {
    struct Walk<F>(F);
    impl<'ast, F: FnMut(MethodSite<'ast>, &'ast syn::Signature, bool)> Visit<'ast> for Walk<F> {
        fn visit_item_impl(&mut self, i: &'ast syn::ItemImpl) {
            for inner in &i.items {
                if let syn::ImplItem::Fn(f) = inner {
                    (self.0)(MethodSite::Impl(i), &f.sig, true);
                }
            }
            syn::visit::visit_item_impl(self, i);
        }
        fn visit_item_trait(&mut self, t: &'ast syn::ItemTrait) {
            for inner in &t.items {
                if let syn::TraitItem::Fn(f) = inner {
                    (self.0)(MethodSite::Trait(t), &f.sig, f.default.is_some());
                }
            }
            syn::visit::visit_item_trait(self, t);
        }
    }
    Walk(each).visit_block(block);
}

/// Blanks what evcxr reads itself (`:` commands, `!` shell lines) and the crate attributes at
/// the top (`#![…]`), then parses the code as the body of a function, as evcxr runs it; `None`
/// where it is not Rust.
pub(super) fn parse(code: &str) -> Option<syn::Block> {
    syn::parse_str(&format!("{{\n{}\n}}", without_commands(code))).ok()
}

/// `code` with what evcxr reads itself (`:` commands, `!` shell lines) and the crate
/// attributes at the top (`#![…]`) blanked: the Rust of it.
pub(super) fn without_commands(code: &str) -> String {
    let code: Vec<&str> = code
        .lines()
        .map(|l| {
            let command = l.trim_start().starts_with(':') || l.starts_with('!');
            if command || l.trim_start().starts_with("#![") {
                ""
            } else {
                l
            }
        })
        .collect();
    code.join("\n")
}

/// What an answer cell defines at its top level.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Defined {
    /// Its names, each with its namespace ([`named`]).
    pub names: Vec<String>,
    /// What makes it unfit whatever the names: a glob import from a module of the notebook's
    /// own (`use helpers::*;`, which could bring any name ahead of the standard prelude), a
    /// module that exports its macros (`#[macro_use]`, `#[macro_export]`) or lives in another
    /// file (`mod x;`, `#[path]`).
    pub unfit: Vec<String>,
}

/// What `code` defines at its top level; `None` where it does not parse.
pub(super) fn defined(code: &str) -> Option<Defined> {
    let block = parse(code)?;
    let mut out = Defined::default();
    for stmt in &block.stmts {
        match stmt {
            syn::Stmt::Local(local) => bound_names(&local.pat, "value", &mut out.names),
            syn::Stmt::Item(item) => item_names(item, &mut out),
            syn::Stmt::Macro(m) if m.mac.path.is_ident("macro_rules") => {
                if let Some(proc_macro2::TokenTree::Ident(name)) =
                    m.mac.tokens.clone().into_iter().next()
                {
                    out.names.push(named("macro", &name));
                }
            }
            _ => {}
        }
    }
    each_method(&block, |_, sig, _| {
        out.names.push(named("method", &sig.ident))
    });
    out.unfit.extend(impl_in_macros(&block));
    out.names.sort();
    out.names.dedup();
    Some(out)
}

/// The macros in `block` whose arguments hold an `impl` block, each in words. `syn` keeps a
/// macro's arguments as tokens, so neither the methods found here nor the declarations rule
/// see an `impl` written there, though it applies to the whole crate as any other
/// (`format!("{}", { impl Fake { fn allclose(…) } 0 })`); no answer needs one.
fn impl_in_macros(block: &syn::Block) -> Vec<String> {
    fn holds_impl(tokens: proc_macro2::TokenStream) -> bool {
        tokens.into_iter().any(|tree| match tree {
            proc_macro2::TokenTree::Ident(i) => i == "impl",
            proc_macro2::TokenTree::Group(g) => holds_impl(g.stream()),
            _ => false,
        })
    }
    struct Walk(Vec<String>);
    impl<'ast> Visit<'ast> for Walk {
        fn visit_macro(&mut self, m: &'ast syn::Macro) {
            if holds_impl(m.tokens.clone()) {
                let name = m.path.segments.last().map(|s| s.ident.unraw().to_string());
                self.0.push(format!(
                    "an `impl` inside the arguments of `{}!`, where the grader cannot read it",
                    name.unwrap_or_default()
                ));
            }
        }
    }
    let mut walk = Walk(Vec::new());
    walk.visit_block(block);
    walk.0
}

fn item_names(item: &syn::Item, out: &mut Defined) {
    let mut push = |namespace: &str, ident: &proc_macro2::Ident| {
        out.names.push(named(namespace, ident));
    };
    match item {
        syn::Item::Fn(f) => push("value", &f.sig.ident),
        syn::Item::Const(c) => {
            push("value", &c.ident);
            push("pattern", &c.ident);
        }
        syn::Item::Static(s) => {
            push("value", &s.ident);
            push("pattern", &s.ident);
        }
        syn::Item::Struct(s) => {
            push("type", &s.ident);
            if !matches!(s.fields, syn::Fields::Named(_)) {
                push("value", &s.ident);
                push("pattern", &s.ident);
            }
        }
        syn::Item::Enum(e) => push("type", &e.ident),
        syn::Item::Union(u) => push("type", &u.ident),
        syn::Item::Type(t) => push("type", &t.ident),
        syn::Item::TraitAlias(t) => push("type", &t.ident),
        // Its methods, and an `impl` block's, are read at any depth (`defined`).
        syn::Item::Trait(t) => push("type", &t.ident),
        syn::Item::ExternCrate(e) => push("type", e.rename.as_ref().map_or(&e.ident, |(_, r)| r)),
        syn::Item::Macro(m) => {
            if let Some(ident) = &m.ident {
                push("macro", ident);
            }
        }
        syn::Item::Mod(m) => {
            push("type", &m.ident);
            let exports = m
                .attrs
                .iter()
                .any(|a| a.path().is_ident("macro_use") || a.path().is_ident("path"))
                || m.content.is_none()
                || m.content
                    .as_ref()
                    .is_some_and(|(_, items)| exports_macros(items));
            if exports {
                out.unfit.push(format!(
                    "a module `{}` that exports macros or lives in another file",
                    m.ident.unraw()
                ));
            }
        }
        syn::Item::Use(u) => use_names(&u.tree, None, out),
        syn::Item::ForeignMod(f) => {
            for inner in &f.items {
                match inner {
                    syn::ForeignItem::Fn(f) => push("value", &f.sig.ident),
                    syn::ForeignItem::Static(s) => push("value", &s.ident),
                    syn::ForeignItem::Type(t) => push("type", &t.ident),
                    _ => {}
                }
            }
        }
        // Anything syn keeps as tokens (`Item::Verbatim`) is read as unfit.
        syn::Item::Verbatim(_) => out.unfit.push("an item the grader cannot read".into()),
        _ => {}
    }
}

/// Whether `items` (a module's) hold a `#[macro_export]` macro or a module that exports
/// macros in turn.
fn exports_macros(items: &[syn::Item]) -> bool {
    items.iter().any(|item| match item {
        syn::Item::Macro(m) => m.attrs.iter().any(|a| a.path().is_ident("macro_export")),
        syn::Item::Mod(m) => {
            m.content.is_none()
                || m.attrs.iter().any(|a| a.path().is_ident("macro_use"))
                || m.content
                    .as_ref()
                    .is_some_and(|(_, inner)| exports_macros(inner))
        }
        _ => false,
    })
}

/// The names a `use` tree brings that can differ from what the checks see: a rename, or any
/// name from a path that does not start with an external crate (in both namespaces).
fn use_names(tree: &syn::UseTree, first: Option<&str>, out: &mut Defined) {
    let local = |first: Option<&str>| first.is_none_or(|f| !EXTERN_CRATES.contains(&f));
    let both = |ident: &proc_macro2::Ident, out: &mut Defined| {
        for namespace in ["value", "type", "macro"] {
            out.names.push(named(namespace, ident));
        }
    };
    match tree {
        syn::UseTree::Path(p) => {
            let segment = p.ident.unraw().to_string();
            use_names(&p.tree, Some(first.unwrap_or(&segment)), out);
        }
        // Whatever it brings may be a constant (`use std::f64::consts::PI;`).
        syn::UseTree::Name(n) => {
            out.names.push(named("pattern", &n.ident));
            if local(first) {
                both(&n.ident, out);
            }
        }
        syn::UseTree::Rename(r) => {
            out.names.push(named("pattern", &r.rename));
            if r.rename.unraw() != r.ident.unraw() || local(first) {
                both(&r.rename, out);
            }
        }
        syn::UseTree::Glob(_) if local(first) => out.unfit.push(format!(
            "a glob import of a module of its own (`use {}::*`)",
            first.unwrap_or("")
        )),
        syn::UseTree::Glob(_) => {}
        syn::UseTree::Group(g) => g.items.iter().for_each(|t| use_names(t, first, out)),
    }
}

/// Every name `code` binds by a pattern, anywhere (`let`, arguments, closures, `match`, `for`),
/// as `pattern:x`: a constant, static or unit or tuple struct of that name that an earlier
/// answer defined would make the pattern refer to it (`let history = …` no longer compiles,
/// E0530), so the locked cell would not run and the answer's value would stand in for what it
/// makes. Empty where it does not parse.
pub(super) fn pattern_bindings(code: &str) -> HashSet<String> {
    let Some(block) = parse(code) else {
        return HashSet::new();
    };
    let mut names = Vec::new();
    Binds("pattern", &mut names).visit_block(&block);
    names.into_iter().collect()
}

/// The variables `code` binds at its top level (`let`), as `value:x`: what evcxr keeps of it for
/// the cells after it, where it ends without failing. Empty where it does not parse.
pub(super) fn top_level_variables(code: &str) -> HashSet<String> {
    let mut names = Vec::new();
    for stmt in parse(code).map(|b| b.stmts).unwrap_or_default() {
        if let syn::Stmt::Local(local) = stmt {
            bound_names(&local.pat, "value", &mut names);
        }
    }
    names.into_iter().collect()
}

/// Collects the names the patterns it visits bind, in a namespace.
struct Binds<'a>(&'a str, &'a mut Vec<String>);

impl<'ast> Visit<'ast> for Binds<'_> {
    fn visit_pat_ident(&mut self, p: &'ast syn::PatIdent) {
        self.1.push(named(self.0, &p.ident));
        syn::visit::visit_pat_ident(self, p);
    }
}

/// The names a pattern binds, in `namespace`.
pub(super) fn bound_names(pat: &syn::Pat, namespace: &str, out: &mut Vec<String>) {
    Binds(namespace, out).visit_pat(pat);
}

/// The names `code` uses from outside itself, each with its namespace (see the
/// [module docs](self)); empty where it does not parse.
pub(super) fn used(code: &str) -> HashSet<String> {
    let Some(block) = parse(code) else {
        return HashSet::new();
    };
    let mut uses = Uses::default();
    uses.visit_block(&block);
    uses.used.retain(|name| !uses.bound.contains(name));
    uses.used
}

/// The names the items of `code` (its functions, `impl` blocks, types, …, not its statements)
/// use from outside themselves: evcxr builds a cell's items again with every later cell, so an
/// item of an earlier cell sees what a later answer defines.
pub(super) fn used_in_items(code: &str) -> HashSet<String> {
    let Some(block) = parse(code) else {
        return HashSet::new();
    };
    let mut uses = Uses::default();
    for stmt in &block.stmts {
        if let syn::Stmt::Item(item) = stmt {
            if !matches!(item, syn::Item::Use(_)) {
                uses.visit_item(item);
            }
        }
    }
    uses.used.retain(|name| !uses.bound.contains(name));
    uses.used
}

#[derive(Default)]
struct Uses {
    used: HashSet<String>,
    bound: HashSet<String>,
}

impl Uses {
    /// A path's first segment: a value where it is all of an expression's or pattern's path,
    /// else a type or module.
    fn path(&mut self, path: &syn::Path, value: bool) {
        if path.leading_colon.is_some() {
            return;
        }
        if let Some(first) = path.segments.first() {
            let namespace = if value && path.segments.len() == 1 {
                "value"
            } else {
                "type"
            };
            self.used.insert(named(namespace, &first.ident));
        }
    }
}

impl<'ast> Visit<'ast> for Uses {
    fn visit_expr_path(&mut self, e: &'ast syn::ExprPath) {
        // The path as a value, then what is inside it (a qualified self type, generic
        // arguments), not the path again as a type.
        self.path(&e.path, true);
        if let Some(q) = &e.qself {
            self.visit_qself(q);
        }
        for segment in &e.path.segments {
            self.visit_path_arguments(&segment.arguments);
        }
    }

    fn visit_pat_tuple_struct(&mut self, p: &'ast syn::PatTupleStruct) {
        self.path(&p.path, true);
        for segment in &p.path.segments {
            self.visit_path_arguments(&segment.arguments);
        }
        for elem in &p.elems {
            self.visit_pat(elem);
        }
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        // Every other path (types, struct literals, traits, attributes' arguments): a type.
        self.path(path, false);
        syn::visit::visit_path(self, path);
    }

    fn visit_expr_method_call(&mut self, e: &'ast syn::ExprMethodCall) {
        self.used.insert(named("method", &e.method));
        syn::visit::visit_expr_method_call(self, e);
    }

    fn visit_pat_ident(&mut self, p: &'ast syn::PatIdent) {
        self.bound.insert(named("value", &p.ident));
        syn::visit::visit_pat_ident(self, p);
    }

    fn visit_generic_param(&mut self, p: &'ast syn::GenericParam) {
        match p {
            syn::GenericParam::Type(t) => self.bound.insert(named("type", &t.ident)),
            syn::GenericParam::Const(c) => self.bound.insert(named("value", &c.ident)),
            syn::GenericParam::Lifetime(_) => false,
        };
        syn::visit::visit_generic_param(self, p);
    }

    /// A cell's own `use` binds what it names (a check's `use sgm_homework::stats::normal_cdf;`
    /// is what it calls, whatever an answer defined); the path's first segment is used.
    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        let mut own = Defined::default();
        use_names(&u.tree, Some(""), &mut own);
        self.bound.extend(own.names);
        if let syn::UseTree::Path(p) = &u.tree {
            if u.leading_colon.is_none() {
                self.used.insert(named("type", &p.ident));
            }
        }
    }

    /// A macro: its name, and its arguments read as expressions where they are
    /// (`assert!(a == b)`, `println!("{}", x)`), else every name in them as a value and a type.
    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        match (m.path.leading_colon.is_some(), m.path.segments.len()) {
            (false, 1) => {
                self.used.insert(named("macro", &m.path.segments[0].ident));
            }
            _ => self.path(&m.path, false),
        }
        let parser = syn::punctuated::Punctuated::<syn::Expr, syn::Token![,]>::parse_terminated;
        match m.parse_body_with(parser) {
            Ok(args) => args.iter().for_each(|e| self.visit_expr(e)),
            Err(_) => idents(m.tokens.clone(), &mut self.used),
        }
    }
}

fn idents(tokens: proc_macro2::TokenStream, out: &mut HashSet<String>) {
    for token in tokens {
        match token {
            proc_macro2::TokenTree::Ident(i) => {
                for namespace in ["value", "type", "method"] {
                    out.insert(named(namespace, &i));
                }
            }
            proc_macro2::TokenTree::Group(g) => idents(g.stream(), out),
            _ => {}
        }
    }
}
