/* placeholder: replaced by the test origin */
int main(void)
{
    return 0;
}
