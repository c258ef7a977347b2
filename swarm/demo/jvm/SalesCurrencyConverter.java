// The JVM step of `swarm demo sales`: converts the aggregated revenue from CNY fen to USD.
//
// Input (the step runtime's environment): SWARM_IN_TABLETSV, lines "region<TAB>category<TAB>orders<TAB>fen",
// and SWARM_IN_RATE, USD per CNY as a decimal string. Output: one JSON object on the last line of stdout.
// Rounding is half-even to the cent from the exact values, the same as the Python fallback
// (sales_pipeline.convert_currency), so either engine gives the same report.

import java.math.BigDecimal;
import java.math.RoundingMode;

public final class SalesCurrencyConverter {
    private SalesCurrencyConverter() {}

    public static void main(String[] args) {
        String table = System.getenv().getOrDefault("SWARM_IN_TABLETSV", "");
        String rateText = System.getenv().getOrDefault("SWARM_IN_RATE", "");
        if (rateText.isEmpty()) {
            System.err.println("SalesCurrencyConverter: input 'rate' is missing");
            System.exit(2);
        }
        BigDecimal rate = new BigDecimal(rateText.trim());
        StringBuilder out = new StringBuilder();
        out.append("{\"currency\":\"USD\",\"rate\":").append(quote(rateText.trim()));
        out.append(",\"engine\":\"jvm\",\"converted\":[");
        int rows = 0;
        for (String line : table.split("\n")) {
            if (line.isBlank()) {
                continue;
            }
            String[] cells = line.split("\t");
            if (cells.length != 4) {
                System.err.println("SalesCurrencyConverter: bad table line: " + line);
                System.exit(2);
            }
            long orders = Long.parseLong(cells[2]);
            BigDecimal yuan = new BigDecimal(cells[3]).multiply(rate);
            BigDecimal revenue = yuan.divide(BigDecimal.valueOf(100), 2, RoundingMode.HALF_EVEN);
            BigDecimal average = orders == 0
                ? BigDecimal.ZERO.setScale(2)
                : yuan.divide(BigDecimal.valueOf(100L * orders), 2, RoundingMode.HALF_EVEN);
            if (rows++ > 0) {
                out.append(',');
            }
            out.append("{\"region\":").append(quote(cells[0]));
            out.append(",\"category\":").append(quote(cells[1]));
            out.append(",\"revenueUsd\":").append(quote(revenue.toPlainString()));
            out.append(",\"avgOrderUsd\":").append(quote(average.toPlainString()));
            out.append('}');
        }
        out.append("]}");
        System.out.println("converted " + rows + " rows at " + rate.toPlainString() + " USD per CNY");
        System.out.println(out);
    }

    private static String quote(String text) {
        StringBuilder s = new StringBuilder("\"");
        for (char ch : text.toCharArray()) {
            if (ch == '"' || ch == '\\') {
                s.append('\\').append(ch);
            } else if (ch < 0x20) {
                s.append(String.format("\\u%04x", (int) ch));
            } else {
                s.append(ch);
            }
        }
        return s.append('"').toString();
    }
}
