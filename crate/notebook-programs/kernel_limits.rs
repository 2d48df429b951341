//! What the evcxr kernel cannot run that a program can: checked on every notebook when its
//! program is built (`build.rs`), so that a cell the kernel would fail on fails the build.
//!
//! evcxr keeps every top-level `let` of a cell for the cells after it, but it cannot keep a
//! closure: its type has no name to store it under. Such a cell fails in the kernel ("The
//! variable `f` is a closure, which cannot be persisted", or "closure may outlive the current
//! function" when it borrows) and keeps **none** of its variables, so the cells after it fail
//! too; as one function body, the program runs it. A closure inside a block, or one stored
//! under a named type (`let f: Box<dyn Fn(f64) -> f64> = Box::new(|x| x)`), is kept; so is a
//! name the cell binds again later (evcxr keeps the last binding), and `let _ = …` keeps nothing.
//!
//! Only a closure written as the value is caught (also in parentheses, behind `&`, as a block's
//! last expression, or in a tuple bound to a tuple pattern). evcxr decides from the inferred
//! type, so values that merely hold a closure fail there too and are not caught here: a lazy
//! iterator (`v.iter().map(|x| x * 2)`), `Some(|x| x)`, an unannotated `Box::new(|x| x)`, a
//! function's `impl Fn`. The kernel's own message names those.

/// The names bound at the top level of `block` (a cell's statements) to a closure that evcxr
/// would try to keep, with the line of each (from 1, counting the block's own first line).
pub fn closure_variables(block: &syn::Block) -> Vec<(String, usize)> {
    // Every top-level binding in order: (name, line, bound to a closure).
    let mut bindings: Vec<(String, usize, bool)> = Vec::new();
    for stmt in &block.stmts {
        if let syn::Stmt::Local(local) = stmt {
            bind(
                &local.pat,
                local.init.as_ref().map(|i| &*i.expr),
                &mut bindings,
            );
        }
    }
    bindings
        .iter()
        .enumerate()
        .filter(|(k, (name, _, closure))| {
            *closure && !bindings[k + 1..].iter().any(|(later, _, _)| later == name)
        })
        .map(|(_, (name, line, _))| (name.clone(), *line))
        .collect()
}

/// Records the names `pat` binds, each with whether its part of `value` is a closure.
fn bind(pat: &syn::Pat, value: Option<&syn::Expr>, out: &mut Vec<(String, usize, bool)>) {
    match pat {
        // A named type is what evcxr stores; `_` in it leaves the closure's type to inference.
        syn::Pat::Type(typed) if has_placeholder(&typed.ty) => bind(&typed.pat, value, out),
        syn::Pat::Type(typed) => bind(&typed.pat, None, out),
        syn::Pat::Ident(ident) => out.push((
            ident.ident.to_string(),
            syn::spanned::Spanned::span(ident).start().line,
            value.is_some_and(is_closure),
        )),
        syn::Pat::Tuple(tuple) => {
            let values: Option<Vec<&syn::Expr>> = match value.map(unwrap_parens) {
                Some(syn::Expr::Tuple(t)) if t.elems.len() == tuple.elems.len() => {
                    Some(t.elems.iter().collect())
                }
                _ => None,
            };
            for (k, part) in tuple.elems.iter().enumerate() {
                bind(part, values.as_ref().map(|v| v[k]), out);
            }
        }
        syn::Pat::Paren(inner) => bind(&inner.pat, value, out),
        _ => {}
    }
}

fn unwrap_parens(expr: &syn::Expr) -> &syn::Expr {
    match expr {
        syn::Expr::Paren(inner) => unwrap_parens(&inner.expr),
        other => other,
    }
}

/// A closure, also in parentheses, behind a reference (`&|x| x`) or as a block's last
/// expression (`{ …; |x| x }`).
fn is_closure(expr: &syn::Expr) -> bool {
    match expr {
        syn::Expr::Closure(_) => true,
        syn::Expr::Paren(inner) => is_closure(&inner.expr),
        syn::Expr::Reference(inner) => is_closure(&inner.expr),
        syn::Expr::Block(block) => match block.block.stmts.last() {
            Some(syn::Stmt::Expr(last, None)) => is_closure(last),
            _ => false,
        },
        _ => false,
    }
}

/// Whether a type leaves a part to inference (`_`, `Box<_>`, `&_`).
fn has_placeholder(ty: &syn::Type) -> bool {
    match ty {
        syn::Type::Infer(_) => true,
        syn::Type::Reference(r) => has_placeholder(&r.elem),
        syn::Type::Paren(p) => has_placeholder(&p.elem),
        syn::Type::Group(g) => has_placeholder(&g.elem),
        syn::Type::Array(a) => has_placeholder(&a.elem),
        syn::Type::Slice(s) => has_placeholder(&s.elem),
        syn::Type::Ptr(p) => has_placeholder(&p.elem),
        syn::Type::Tuple(t) => t.elems.iter().any(has_placeholder),
        syn::Type::Path(p) => p
            .path
            .segments
            .iter()
            .any(|segment| match &segment.arguments {
                syn::PathArguments::AngleBracketed(args) => args.args.iter().any(|arg| match arg {
                    syn::GenericArgument::Type(t) => has_placeholder(t),
                    _ => false,
                }),
                _ => false,
            }),
        _ => false,
    }
}
