"""chameleon: compile and render a big HTML table with a Chameleon page template."""

from chameleon import PageTemplate

TEMPLATE = """\
<table xmlns:tal="http://xml.zope.org/namespaces/tal">
<tr tal:repeat="row rows">
<td tal:repeat="c row.items()"><span tal:content="c[0]"/>=<b tal:content="c[1]"/></td>
</tr>
</table>
"""


def main(args):
    rows = int(args.get("rows", 10))
    cols = int(args.get("cols", 15))
    table = [{f"c{c}": r * cols + c for c in range(cols)} for r in range(rows)]
    html = PageTemplate(TEMPLATE)(rows=table)
    return {"rows": rows, "cols": cols, "bytes": len(html)}
